#!/bin/bash
#flux: --job-name=tiny
#flux: --cwd=/tmp/tiny
#flux: --output=tiny.out
#flux: --error=tiny.err
#flux: -q pbatch
#flux: --bank=guests
#flux: --setattr=system.gpumode=CPX

true
