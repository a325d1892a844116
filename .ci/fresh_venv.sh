# Sourced by .ci/lowest.sh and .ci/extras.sh: fresh_venv DIR [pip install args...] makes a
# new venv in DIR and installs into it with uv (pip takes minutes per venv here; uv seconds).
# uv comes from PATH, the project's .venv, or is installed into a throwaway venv.
_uv() {
  if [ -z "${UV:-}" ]; then
    if command -v uv >/dev/null; then
      UV=$(command -v uv)
    elif [ -x .venv/bin/uv ]; then
      UV=.venv/bin/uv
    else
      python3 -m venv "$tmp/uv-tool"
      "$tmp/uv-tool/bin/pip" install -q 'uv>=0.5'
      UV="$tmp/uv-tool/bin/uv"
    fi
  fi
  "$UV" "$@"
}

fresh_venv() {
  local dir=$1
  shift
  _uv venv -q --python python3 "$dir"
  _uv pip install -q --python "$dir/bin/python" "$@"
}
