#!/bin/bash
#BSUB -J tiny
#BSUB -cwd /tmp/tiny
#BSUB -o tiny.out
#BSUB -e tiny.err
#BSUB -q pbatch
#BSUB -G guests
#BSUB -app big
#BSUB -M 4GB

true
