// A Java job of the kind HPC sites run (a workflow engine, a genomics tool):
// a pool of 8 worker threads computing on freshly allocated arrays (the
// garbage collector busy), a parallel stream (the common fork-join pool),
// and a heap that grows by an array each tick, the last 40 kept. Each tick
// prints what all of it computed: the same output on every run.
// usage: java WorkPool.java TICKS INTERVAL_MS
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.IntStream;

public class WorkPool {
  public static void main(String[] args) throws Exception {
    int ticks = Integer.parseInt(args[0]);
    int interval = Integer.parseInt(args[1]);
    ExecutorService pool = Executors.newFixedThreadPool(8);
    List<long[]> kept = new ArrayList<>();
    for (int t = 1; t <= ticks; t++) {
      Thread.sleep(interval);
      final int tick = t;
      List<Future<Long>> parts = new ArrayList<>();
      for (int w = 0; w < 8; w++) {
        final int worker = w;
        parts.add(pool.submit(() -> {
          long s = 0;
          for (int k = 0; k < 200; k++) {
            long[] a = new long[5000];
            for (int i = 0; i < a.length; i++) a[i] = (long) i * tick + worker + k;
            s += a[(tick + k) % a.length];
          }
          return s;
        }));
      }
      long sum = 0;
      for (Future<Long> f : parts) sum += f.get();
      long[] a = new long[100000];
      Arrays.fill(a, t);
      kept.add(a);
      if (kept.size() > 40) kept.remove(0);
      long par = IntStream.range(0, 1000000).parallel().mapToLong(i -> (long) i % (tick + 7)).sum();
      long held = kept.stream().mapToLong(x -> x[x.length - 1]).sum();
      System.out.println("tick " + t + " sum " + sum + " par " + par + " kept " + held);
    }
    pool.shutdown();
  }
}
