#!/bin/bash
#BSUB -J "sim job"
#BSUB -cwd "/scratch/study/sim run"
#BSUB -o sim.out
#BSUB -e sim.err
#BSUB -nnodes 2
#BSUB -gpu num=4
#BSUB -W 26:04
#BSUB -q pbatch
#BSUB -G guests
#BSUB -U dat
#BSUB -x
#BSUB -app big
#BSUB -M 4GB

cd data
./simulate --size 10
