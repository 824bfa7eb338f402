! A Fortran job of the kind HPC users run: heat diffusion on an N x N grid
! held in a module's allocatable arrays, each step an OpenMP parallel
! stencil, results written as the job goes through libgfortran's own
! buffered units: a formatted log (OUTDIR/heat.log, not flushed, so what a
! checkpoint finds waits in the job's memory) and an unformatted stream file
! (OUTDIR/heat.bin). Each step prints "step K sum S" on stdout (flushed), S
! summed serially in a fixed order, so the output is the same on every run
! with the same N and thread count.
! Usage: heat N STEPS INTERVAL_MS OUTDIR   (prints "threads T" first, "done" last)
module grid
  implicit none
  integer :: n
  real(8), allocatable :: u(:, :), unew(:, :)
contains
  subroutine init()
    integer :: i, j
    allocate(u(n, n), unew(n, n))
    do j = 1, n
      do i = 1, n
        u(i, j) = real(mod(i * 7 + j * 13, 101), 8)
      end do
    end do
    unew = u
  end subroutine

  subroutine step()
    integer :: i, j
    !$omp parallel do private(i)
    do j = 2, n - 1
      do i = 2, n - 1
        unew(i, j) = u(i, j) + 0.2d0 * (u(i - 1, j) + u(i + 1, j) + u(i, j - 1) + u(i, j + 1) &
                                        - 4.0d0 * u(i, j))
      end do
    end do
    !$omp end parallel do
    u(2:n - 1, 2:n - 1) = unew(2:n - 1, 2:n - 1)
  end subroutine

  real(8) function total()
    integer :: i, j
    total = 0.0d0
    do j = 1, n
      do i = 1, n
        total = total + u(i, j) * real(mod(i + j, 5) + 1, 8)
      end do
    end do
  end function
end module grid

program heat
  use, intrinsic :: iso_c_binding, only: c_int
  use, intrinsic :: iso_fortran_env, only: output_unit
  use omp_lib, only: omp_get_max_threads
  use grid
  implicit none
  interface
    integer(c_int) function usleep(us) bind(C, name="usleep")
      import :: c_int
      integer(c_int), value :: us
    end function
  end interface
  character(len=4096) :: arg, outdir
  integer :: steps, interval_ms, k, rc
  real(8) :: s

  call get_command_argument(1, arg)
  read(arg, *) n
  call get_command_argument(2, arg)
  read(arg, *) steps
  call get_command_argument(3, arg)
  read(arg, *) interval_ms
  call get_command_argument(4, outdir)

  call init()
  open(unit=20, file=trim(outdir)//'/heat.log', status='replace', action='write')
  open(unit=21, file=trim(outdir)//'/heat.bin', status='replace', action='write', &
       access='stream', form='unformatted')
  write(output_unit, '(a, i0)') 'threads ', omp_get_max_threads()
  flush(output_unit)
  do k = 1, steps
    call step()
    s = total()
    write(20, '(a, i0, a, es24.16)') 'step ', k, ' total ', s
    write(21) k, s
    write(output_unit, '(a, i0, a, es24.16)') 'step ', k, ' sum ', s
    flush(output_unit)
    rc = usleep(int(interval_ms * 1000, c_int))
  end do
  close(20)
  close(21)
  write(output_unit, '(a)') 'done'
end program heat
