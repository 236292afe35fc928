# Shared by scripts/demo and scripts/test: configure a build directory once,
# reconfigure when it exists, then build. Sourced, not run.

# keel_build DIR [meson options...]
keel_build() {
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log" >&2; return 1; }
    rm -f "$dir.setup.log"
  fi
  ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { tail -n 60 "$dir.ninja.log" >&2; return 1; }
  rm -f "$dir.ninja.log"
}
