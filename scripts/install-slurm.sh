#!/usr/bin/env bash
# Install the SLURM daemons, client tools and munge that the tests start privately
# (tests/servers/slurm.py) on a fresh Debian/Ubuntu machine. Does nothing when they are
# already there, so CI may call it on every run. The tests write their own slurm.conf, munge
# key and state folders in a temporary directory: nothing under /etc is configured here, and
# the packages' own services are stopped so they never compete with the tests' daemons.
set -euo pipefail

needed=(slurmctld slurmd sbatch squeue scontrol scancel munged mungekey)
missing=0
for tool in "${needed[@]}"; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then missing=1; fi
done
if [ "$missing" -eq 0 ]; then
    echo "SLURM and munge already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge
# Package scripts may start system-wide daemons where an init system runs; the tests use
# their own instances, so stop those (harmless when nothing was started).
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl disable --now slurmctld slurmd munge 2>/dev/null || true
fi
