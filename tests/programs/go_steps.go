// A Go job: a statically linked program with a runtime of its own (its own
// threads, signal handlers and alternate signal stacks, its own
// sigreturn, no C library), which a checkpointer that preloads a library
// cannot take. Each step four goroutines rewrite a quarter of 2 MiB of
// data each, and the step's line is a digest of what they wrote: a run
// restored from a checkpoint prints the same lines as one never stopped.
//
// Usage: go_steps STEPS MS
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go_steps STEPS MS")
		os.Exit(2)
	}
	steps, _ := strconv.Atoi(os.Args[1])
	ms, _ := strconv.Atoi(os.Args[2])
	data := make([]uint64, 1<<18)
	for i := range data {
		data[i] = uint64(i) * 2654435761
	}
	for step := 0; step < steps; step++ {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		var wg sync.WaitGroup
		parts := make([]uint64, 4)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				var digest uint64
				for i := w; i < len(data); i += 4 {
					data[i] = data[i]*6364136223846793005 + uint64(step)
					digest ^= data[i]
				}
				parts[w] = digest
			}(w)
		}
		wg.Wait()
		fmt.Printf("%d %x\n", step, parts[0]^parts[1]^parts[2]^parts[3])
	}
	fmt.Println("DONE")
}
