#!/bin/bash
#SBATCH --job-name=sweep
#SBATCH --chdir=/scratch/study/sweep
#SBATCH --output=sweep.out
#SBATCH --error=sweep.err
#SBATCH --ntasks=1
#SBATCH --time=00:10:00
#SBATCH --partition=pbatch
#SBATCH --account=guests
#SBATCH --array=1-10%2
#SBATCH --mem=4G
#SBATCH --requeue
#SBATCH -C haswell

echo task
