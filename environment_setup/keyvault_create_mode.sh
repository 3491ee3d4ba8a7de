#!/usr/bin/env bash
# Print the Key Vault createMode main.bicep needs: "recover" when a soft-deleted vault of this resource group
# and base name exists, else "default". With purge protection on, a deleted vault keeps its name for its
# retention period (90 days); creating it again fails, recovering it works. In Azure DevOps it also sets the
# pipeline variable KEY_VAULT_CREATE_MODE.
# Usage: environment_setup/keyvault_create_mode.sh RESOURCE_GROUP BASE_NAME   (signed in with az)
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 RESOURCE_GROUP BASE_NAME" >&2
  exit 2
fi

deleted="$(az keyvault list-deleted --resource-type vault --output json)"
mode="$(DELETED="${deleted}" python3 - "$1" "$2" <<'PY'
import json, os, sys

group, base = sys.argv[1].lower(), sys.argv[2].lower().replace("-", "")
# main.bicep names the vault '<baseName>kv<6 characters>' in the resource group; the id of a deleted vault keeps
# its resource group.
for vault in json.loads(os.environ["DELETED"] or "[]"):
    vault_id = ((vault.get("properties") or {}).get("vaultId") or "").lower()
    if f"/resourcegroups/{group}/" in vault_id and vault.get("name", "").lower().startswith(f"{base}kv"):
        print("recover")
        break
else:
    print("default")
PY
)"
echo "Key Vault createMode: ${mode}"
if [ -n "${TF_BUILD:-}" ]; then
  echo "##vso[task.setvariable variable=KEY_VAULT_CREATE_MODE]${mode}"
fi
