#!/bin/sh
# Create or update the sandbox's Python environment in DIR (the Makefile and the Dockerfile
# both use this). Re-running it changes nothing that is already in place.
#   install.sh DIR [PYTHON]       PYTHON: the interpreter the sandbox runs (/usr/bin/python3)
set -eu
dir=$1
python=${2:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
umask 022  # the sandbox reads the environment as uid 65534

test -x "$dir/bin/python" || "$python" -m venv "$dir"
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$here/requirements.txt"
site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cp "$here/athenic_sandbox_backend.py" "$site/athenic_sandbox_backend.py"
# The sandbox runs with -B on a read-only mount: compile now, or every run compiles it again.
"$dir/bin/python" -m compileall -q "$site/athenic_sandbox_backend.py"
# matplotlib's font list: built once here (a font scan costs about a second per run otherwise);
# the sandbox gets a copy in its private config dir.
rm -rf "$dir/share/athenic-matplotlib"
MPLCONFIGDIR="$dir/share/athenic-matplotlib" MPLBACKEND=Agg "$dir/bin/python" -I -c 'import matplotlib.pyplot'
chmod -R a+rX "$dir"
