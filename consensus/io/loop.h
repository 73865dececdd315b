/*
 * The runtime's loop thread: one per process, running a libuv loop for every node (DESIGN §8).
 *
 * Other threads never touch the loop's handles. They hand it work with io_loop_post (fire and
 * forget) or io_loop_call (post, then wait on a condition variable until the loop side says the
 * work is done, or a timeout passes). Completion may come much later than the posted function
 * returns: a proposal is "done" when Raft commits it. The waiter and the loop agree through a
 * struct io_call the caller owns; see io_call_done.
 */
#ifndef WALRAFT_IO_LOOP_H
#define WALRAFT_IO_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

struct io_loop;

/* A unit of work for the loop thread. `fn` runs on the loop thread with the item itself. */
struct io_work {
    void (*fn)(struct io_work *w);
    struct io_work *next; /* private: queue link */
};

/* A call another thread waits on. Embed it (with io_work first) in a request struct. */
struct io_call {
    struct io_work work;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;      /* set by io_call_done */
    bool abandoned; /* the waiter timed out and left; the loop side frees the request */
    int rc;         /* the result the loop side reports */
    struct io_loop *runner; /* set while the waiter runs the loop (io_call_await_running) */
    pthread_t runner_tid;
    void (*free_fn)(struct io_call *c); /* frees the request if the waiter abandoned it */
};

/* Starts the loop thread. Returns 0, or an error code (negative errno). */
int io_loop_start(struct io_loop **out);

/* Stops the loop thread: runs `on_stop` on the loop thread (close every handle there), then
 * waits for the loop to run out of handles and joins the thread. Frees `l`. */
void io_loop_stop(struct io_loop *l, void (*on_stop)(uv_loop_t *loop, void *arg), void *arg);

/* The libuv loop; use only on the loop thread (or under io_loop_enter). */
uv_loop_t *io_loop_uv(struct io_loop *l);

/* True on the loop thread, and on a thread in io_loop_run_until. */
bool io_loop_is_current(const struct io_loop *l);

/* Runs the calling thread as the loop for a while: until io_loop_leave no loop callback runs (the
 * loop thread holds this lock except while it waits for events). Between the two the caller may
 * do what loop callbacks do. The loop thread meanwhile waits in poll with a timeout it computed
 * before and watchers it registered before: a caller that used libuv (a write, a timer) leaves
 * with io_loop_leave_and_wake, so the loop runs once more (registers new watchers, runs write
 * callbacks, recomputes its timeout). Not on the loop thread; short sections only. */
void io_loop_enter(struct io_loop *l);
void io_loop_leave(struct io_loop *l);
void io_loop_leave_and_wake(struct io_loop *l);

/* Queues `w` to run on the loop thread. Thread-safe. Never fails; `w` must stay valid until it
 * has run. Returns -ESHUTDOWN (and does not queue) once the loop is stopping. */
int io_loop_post(struct io_loop *l, struct io_work *w);

/* Initialises `c` for a call whose work function is `fn`. `free_fn` (may be NULL when the waiter
 * never abandons) frees the enclosing request. */
void io_call_init(struct io_call *c, void (*fn)(struct io_work *w), void (*free_fn)(struct io_call *c));

/* Posts `c` and waits until io_call_done or `timeout_ms` passes (< 0: forever). Returns the rc
 * given to io_call_done, or -ETIMEDOUT after which the request belongs to the loop side (it calls
 * free_fn when done), or -ESHUTDOWN. Without a timeout the caller frees the request afterwards. */
int io_call_wait(struct io_loop *l, struct io_call *c, int64_t timeout_ms);

/* io_call_wait for a request already handed to the loop side (see io_loop_enter). */
int io_call_await(struct io_call *c, int64_t timeout_ms);

/* Runs the loop on the calling thread, which is inside io_loop_enter, until `done(arg)` (called
 * outside the loop's lock) or `timeout_ms` passes (< 0: no limit); returns with the loop left.
 * The loop thread steps aside meanwhile. Another thread that makes done() true must then call
 * io_loop_wake. Returns 1 when done, 0 at the timeout, and -1 at once, still inside, when another
 * thread already runs the loop this way (one at a time). */
int io_loop_run_until(struct io_loop *l, bool (*done)(void *arg), void *arg, int64_t timeout_ms);

/* Wakes the thread that runs the loop (the loop thread, or one in io_loop_run_until). */
void io_loop_wake(struct io_loop *l);

/* io_call_await for a caller inside io_loop_enter, which runs the loop on its own thread while
 * it waits instead of sleeping until the loop thread wakes it. The event that completes the call
 * (a peer's acknowledgement, say) then wakes the waiter directly: one thread wake-up less on the
 * critical path, and none for the loop thread, which steps aside while the waiter runs the loop
 * (it looks again at least every LOOP_PARK_MS, and at once when work is posted after the waiter
 * left). One such waiter at a time; another waits as io_call_await does. Returns with the loop
 * left. Use only where the caller holds nothing that a loop callback takes. */
int io_call_await_running(struct io_loop *l, struct io_call *c, int64_t timeout_ms);

/* Loop side: reports the result. After this the loop side must not touch `c` again. */
void io_call_done(struct io_call *c, int rc);

/* Destroys the mutex and condition variable of a finished call. */
void io_call_fini(struct io_call *c);

/* Milliseconds and microseconds on the monotonic clock (CLOCK_MONOTONIC). */
uint64_t io_now_ms(void);
uint64_t io_now_us(void);

/* The timespec of monotonic time `at_us` (io_now_us's clock), for pthread_cond_timedwait on a
 * condition variable set to that clock. */
struct timespec io_timespec_us(uint64_t at_us);

/* The CLOCK_MONOTONIC time `ms` (>= 0) from now, for pthread_cond_timedwait on a condition
 * variable set to that clock. */
struct timespec io_deadline_ms(int64_t ms);

/* Initialises `c` to wait with CLOCK_MONOTONIC deadlines (io_deadline_ms). */
void io_cond_init_monotonic(pthread_cond_t *c);

#endif
