# Sourced by the other scripts: create (once) and activate the project's virtual environment.
# Debian's own python3 refuses system-wide pip installs (PEP 668) and ships venv separately.
venv_dir="${LEGATO_VENV:-$PWD/.venv}"
if [ ! -x "$venv_dir/bin/python" ]; then
  if ! python3 -m venv "$venv_dir" 2>/dev/null; then
    rm -rf "$venv_dir"
    echo "installing python3-venv (Debian's venv module)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv_dir"
  fi
  "$venv_dir/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
. "$venv_dir/bin/activate"
