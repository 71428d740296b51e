#!/bin/bash
#flux: --job-name="sim job"
#flux: --cwd="/scratch/study/sim run"
#flux: --output=sim.out
#flux: --error=sim.err
#flux: -N 2
#flux: -n 8
#flux: -c 2
#flux: -g 1
#flux: -t 93784s
#flux: -q pbatch
#flux: --bank=guests
#flux: --exclusive
#flux: --setattr=system.gpumode=CPX

cd data
./simulate --size 10
