#!/usr/bin/env python3
"""Turn a Kubernetes release's swagger.json into kubeconform's schema layout.

Reads the OpenAPI v2 document that ships in the k8s.io/kubernetes Go module
(api/openapi-spec/swagger.json) and writes one stand-alone JSON schema per
group/version/kind, the way openapi2jsonschema does for the published
kubernetes-json-schema sets:

    OUT/<version>-standalone/<kind>-<group>-<apiversion>.json
    OUT/<version>-standalone-strict/<kind>-<group>-<apiversion>.json

<group> is the first dot-separated label of the API group and is left out
for the core group (pod-v1.json, deployment-apps-v1.json,
role-rbac-v1.json), which is the name kubeconform asks for
(`{{ .ResourceKind }}{{ .KindSuffix }}.json`). "Stand-alone" means every
$ref is inlined; a reference back into a definition that is already being
expanded (JSONSchemaProps is recursive) becomes an empty schema, which
accepts anything. "Strict" adds `additionalProperties: false` to every
object schema that lists properties and does not say otherwise, so unknown
fields are errors, as with kubectl's validation.

Stdlib only. Usage:
    openapi2jsonschema.py SWAGGER_JSON OUT_DIR KUBERNETES_VERSION
KUBERNETES_VERSION is like v1.34.4; a `master-standalone[-strict]` link to
the generated folders is made too, so kubeconform finds them without
-kubernetes-version.
"""

import copy
import json
import os
import sys

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/definitions/"


def patch_definitions(defs):
    """The same Kubernetes-specific fixes openapi2jsonschema --kubernetes makes."""
    defs[INT_OR_STRING] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    # The API itself takes only strings, but every tool accepts plain numbers.
    defs[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    for definition in defs.values():
        gvks = definition.get("x-kubernetes-group-version-kind") or []
        props = definition.get("properties") or {}
        for gvk in gvks:
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            for name, value in (("apiVersion", api_version), ("kind", gvk["kind"])):
                if name in props:
                    enum = props[name].setdefault("enum", [])
                    if value not in enum:
                        enum.append(value)


def expand(node, defs, stack, strict):
    """Return a copy of node with every $ref inlined (cycles become {})."""
    if isinstance(node, list):
        return [expand(item, defs, stack, strict) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        name = ref[len(REF_PREFIX):]
        if name in stack or name not in defs:
            out = {}
        else:
            out = expand(defs[name], defs, stack | {name}, strict)
        # Keep sibling keywords such as a description next to the reference.
        for key, value in node.items():
            if key != "$ref" and key not in out:
                out[key] = expand(value, defs, stack, strict)
        return out
    out = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            # Property names are not schema keywords: expand only their values.
            out[key] = {prop: expand(schema, defs, stack, strict) for prop, schema in value.items()}
        else:
            out[key] = expand(value, defs, stack, strict)
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def file_name(gvk):
    kind = gvk["kind"].lower()
    group = gvk["group"].split(".")[0].lower()
    version = gvk["version"].lower()
    return f"{kind}-{group}-{version}.json" if group else f"{kind}-{version}.json"


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    swagger_path, out_dir, k8s_version = argv[1], argv[2], argv[3]
    with open(swagger_path, encoding="utf-8") as handle:
        swagger = json.load(handle)
    defs = swagger["definitions"]
    patch_definitions(defs)

    written = 0
    for strict in (False, True):
        flavour = f"{k8s_version}-standalone" + ("-strict" if strict else "")
        target = os.path.join(out_dir, flavour)
        os.makedirs(target, exist_ok=True)
        for name in sorted(defs):
            definition = defs[name]
            gvks = definition.get("x-kubernetes-group-version-kind") or []
            # Only kinds one can write in a manifest: they have apiVersion/kind fields.
            if not gvks or "kind" not in (definition.get("properties") or {}):
                continue
            schema = expand(copy.deepcopy(definition), defs, frozenset({name}), strict)
            schema["$schema"] = "http://json-schema.org/schema#"
            schema.setdefault("type", "object")
            for gvk in gvks:
                path = os.path.join(target, file_name(gvk))
                with open(path, "w", encoding="utf-8") as handle:
                    json.dump(schema, handle, separators=(",", ":"), sort_keys=True)
                written += 1
        link = os.path.join(out_dir, "master-standalone" + ("-strict" if strict else ""))
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(flavour, link)
    print(f"wrote {written} schemas under {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
