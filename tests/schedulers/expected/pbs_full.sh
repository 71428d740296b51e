#!/bin/sh
#PBS -N "sim job"
#PBS -o sim.out
#PBS -e sim.err
#PBS -l select=2:ncpus=8:mpiprocs=4:ngpus=4
#PBS -l walltime=26:03:04
#PBS -l place=scatter:excl
#PBS -q dat
#PBS -A guests
#PBS -m ae
#PBS -l mem=4gb

cd '/scratch/study/sim run' || exit 1
cd data
./simulate --size 10
