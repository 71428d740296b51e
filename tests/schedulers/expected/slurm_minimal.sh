#!/bin/bash
#SBATCH --job-name=tiny
#SBATCH --chdir=/tmp/tiny
#SBATCH --output=tiny.out
#SBATCH --error=tiny.err
#SBATCH --partition=pbatch
#SBATCH --account=guests
#SBATCH --mem=4G
#SBATCH --requeue
#SBATCH -C haswell

true
