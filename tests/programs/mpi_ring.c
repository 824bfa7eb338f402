/* An MPI job: the ranks pass a token around a ring and all-reduce a hash
 * of it, step after step, 100 ms apart; rank 0 prints each step. Under
 * Open MPI's mpirun on one node the ranks talk through shared memory in
 * /dev/shm (the vader transport) and to mpirun through sockets.
 * Usage: mpirun -np N mpi_ring STEPS */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int steps = argc > 1 ? atoi(argv[1]) : 50;
  long token = 0, local = rank + 1;
  for (int s = 1; s <= steps; s++) {
    if (rank == 0) {
      token += s;
      MPI_Send(&token, 1, MPI_LONG, 1 % size, 0, MPI_COMM_WORLD);
      MPI_Recv(&token, 1, MPI_LONG, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else {
      MPI_Recv(&token, 1, MPI_LONG, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      token += rank;
      MPI_Send(&token, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
    }
    local = local * 31 + token;
    long sum = 0;
    MPI_Allreduce(&local, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
      printf("step %d token %ld sum %ld\n", s, token, sum);
      fflush(stdout);
    }
    usleep(100000);
  }
  MPI_Finalize();
  if (rank == 0) printf("done\n");
  return 0;
}
