#!/bin/bash
#SBATCH --job-name="sim job"
#SBATCH --chdir="/scratch/study/sim run"
#SBATCH --output=sim.out
#SBATCH --error=sim.err
#SBATCH --nodes=2
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=2
#SBATCH --gres=gpu:4
#SBATCH --time=1-02:03:04
#SBATCH --partition=pbatch
#SBATCH --account=guests
#SBATCH --reservation=dat
#SBATCH --qos=high
#SBATCH --exclusive
#SBATCH --mem=4G
#SBATCH --requeue
#SBATCH -C haswell

cd data
./simulate --size 10
