# Sourced here (before a lease) by stage-wheels.sh, keep.sh and kcache.sh: what travels to the GPU machine goes
# in parts that each fit one call beside the working tree (64 MiB in all). Run from the repository root.
#   tree_bytes               what every call carries besides its carry paths: tracked and untracked-not-ignored files
#   carry_room               the bytes one call's carry paths may take: LONGCTX_CARRY_MIB (default 64) less the tree,
#                            less 2 MiB for tar headers and what the tree gains before the calls
#   spread DEST SRC:NAME...  each SRC copied to DEST/pK/NAME in order, DEST/p0 filled up to carry_room before p1
#                            starts; every SRC is checked to fit before DEST is cleared (return 2 naming the first
#                            that does not, DEST untouched); prints the number of parts
tree_bytes() {
  { git ls-files -z; git ls-files -z -o --exclude-standard; } | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1
}

carry_room() {
  echo $(( ${LONGCTX_CARRY_MIB:-64} * 1048576 - $(tree_bytes) - 2 * 1048576 ))
}

spread() {
  local dest=$1 room e src size p=0 used=0
  shift
  room=$(carry_room)
  for e in "$@"; do
    src=${e%%:*}
    size=$(stat -c %s "$src")
    [ "$size" -le "$room" ] || { echo "$src ($size bytes) does not fit next to the tree ($((room / 1048576)) MiB)" >&2; return 2; }
  done
  rm -rf "$dest"
  for e in "$@"; do
    src=${e%%:*}
    size=$(stat -c %s "$src")
    if [ $((used + size)) -gt "$room" ]; then p=$((p + 1)) && used=0; fi
    mkdir -p "$dest/p$p" && cp "$src" "$dest/p$p/${e#*:}" && used=$((used + size))
  done
  echo $((p + 1))
}
