# Sourced by the image builds: resolve kernel modules with their dependencies from a Debian kernel tree, no
# modinfo or depmod needed on the build machine (each module's own `depends=` in its .modinfo section).
# usage: kmods_resolve MODDIR MODULE...   then: "${kmods_order[@]}" (dependencies first), "${kmods_path[m]}"
declare -A kmods_path=() kmods_seen=()
kmods_order=()

kmods_file() { # the .ko of a module name (names and file names mix `-` and `_`)
  local f
  f=$(find "$1" \( -name "$2.ko" -o -name "${2//_/-}.ko" -o -name "${2//-/_}.ko" \) -print -quit)
  [ -n "$f" ] || { echo "module $2.ko not found under $1" >&2; exit 1; }
  echo "$f"
}

kmods_add() { # depth-first: dependencies before the module
  local m=$2 f d
  [ -z "${kmods_seen[$m]:-}" ] || return 0
  kmods_seen[$m]=1
  f=$(kmods_file "$1" "$m")
  kmods_path[$m]=$f
  for d in $(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do kmods_add "$1" "$d"; done
  kmods_order+=("$m")
}

kmods_resolve() {
  local dir=$1 m
  shift
  for m in "$@"; do kmods_add "$dir" "$m"; done
}

# Copies MODULES (resolved) into IR/lib/modules with their load order in IR/lib/modules/order.
kmods_install() {
  local ir=$1 m
  mkdir -p "$ir/lib/modules"
  for m in "${kmods_order[@]}"; do cp "${kmods_path[$m]}" "$ir/lib/modules/$m.ko"; done
  echo "${kmods_order[*]}" > "$ir/lib/modules/order"
}
