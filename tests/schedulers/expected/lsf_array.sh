#!/bin/bash
#BSUB -J "sweep[1-10]%2"
#BSUB -cwd /scratch/study/sweep
#BSUB -o sweep.out
#BSUB -e sweep.err
#BSUB -n 1
#BSUB -W 00:10
#BSUB -q pbatch
#BSUB -G guests
#BSUB -app big
#BSUB -M 4GB

echo task
