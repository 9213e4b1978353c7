/*
 * hl_parallel_for: the client's fp32 work (LM head, attention, cross entropy, SwiGLU) on every
 * core of the caller's choosing. Threads are started per call and joined before it returns: a
 * call is milliseconds of work, a thread start tens of microseconds, and no thread outlives the
 * call (the addon stays stateless and every worker_thread may load it).
 * Tasks are handed out by an atomic counter; a task's output may depend only on the task index,
 * never on which thread ran it, so the result is the same for any thread count.
 */
#include "kernels.h"

#include <pthread.h>
#include <stdatomic.h>

#define HL_MAX_THREADS 256

typedef struct {
  hl_task_fn fn;
  void *ctx;
  int ntasks;
  atomic_int next;
} job_t;

static void run_tasks(job_t *job) {
  for (;;) {
    const int t = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
    if (t >= job->ntasks) return;
    job->fn(job->ctx, t);
  }
}

static void *thread_main(void *arg) {
  run_tasks((job_t *)arg);
  return NULL;
}

void hl_parallel_for(int threads, int ntasks, hl_task_fn fn, void *ctx) {
  job_t job = {fn, ctx, ntasks, 0};
  if (threads > ntasks) threads = ntasks;
  if (threads > HL_MAX_THREADS) threads = HL_MAX_THREADS;
  pthread_t ids[HL_MAX_THREADS];
  int started = 0;
  for (int i = 1; i < threads; i++) {
    /* A thread that cannot start leaves its share to the others. */
    if (pthread_create(&ids[started], NULL, thread_main, &job) == 0) started++;
  }
  run_tasks(&job);
  for (int i = 0; i < started; i++) pthread_join(ids[i], NULL);
}
