#!/bin/sh
#PBS -N sweep
#PBS -o sweep.out
#PBS -e sweep.err
#PBS -l select=1:ncpus=1:mpiprocs=1
#PBS -l walltime=00:10:00
#PBS -q workq
#PBS -A guests
#PBS -J 1-10%2
#PBS -m ae
#PBS -l mem=4gb

cd /scratch/study/sweep || exit 1
echo task
