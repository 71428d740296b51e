#!/bin/sh
#PBS -N tiny
#PBS -o tiny.out
#PBS -e tiny.err
#PBS -q workq
#PBS -A guests
#PBS -m ae
#PBS -l mem=4gb

cd /tmp/tiny || exit 1
true
