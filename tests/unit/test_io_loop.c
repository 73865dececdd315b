/* The loop thread runs posted work in order, completes calls, and lets a waiter time out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <cmocka.h>

#include "consensus/io/loop.h"

struct counter_req {
    struct io_call call;
    struct io_loop *loop;
    int *seen;
    int value;
};

static void record(struct io_work *w)
{
    struct counter_req *r = (struct counter_req *)w;
    assert_true(io_loop_is_current(r->loop));
    *r->seen = *r->seen * 10 + r->value;
    io_call_done(&r->call, r->value);
}

static void test_io_loop_calls_run_on_loop_in_order(void **state)
{
    (void)state;
    struct io_loop *l;
    int seen = 0;
    assert_int_equal(io_loop_start(&l), 0);
    assert_false(io_loop_is_current(l));
    for (int i = 1; i <= 5; i++) {
        struct counter_req r = {.loop = l, .seen = &seen, .value = i};
        io_call_init(&r.call, record, NULL);
        assert_int_equal(io_call_wait(l, &r.call, -1), i);
        io_call_fini(&r.call);
    }
    assert_int_equal(seen, 12345);
    io_loop_stop(l, NULL, NULL);
}

/* A call the loop side completes only later: the waiter times out and the loop frees it. */
struct slow_req {
    struct io_call call;
    uv_timer_t timer;
    int *freed;
};

static void slow_free(struct io_call *c)
{
    struct slow_req *r = (struct slow_req *)c;
    *r->freed = 1;
    free(r);
}

static void slow_timer_closed(uv_handle_t *h)
{
    struct slow_req *r = h->data;
    io_call_done(&r->call, 7);
}

static void slow_fire(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, slow_timer_closed);
}

static void slow_start(struct io_work *w)
{
    struct slow_req *r = (struct slow_req *)w;
    extern uv_loop_t *test_loop;
    uv_timer_init(test_loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, slow_fire, 200, 0);
}

uv_loop_t *test_loop;

static void test_io_loop_waiter_times_out_and_loop_frees(void **state)
{
    (void)state;
    struct io_loop *l;
    int freed = 0;
    assert_int_equal(io_loop_start(&l), 0);
    test_loop = io_loop_uv(l);
    struct slow_req *r = calloc(1, sizeof *r);
    r->freed = &freed;
    io_call_init(&r->call, slow_start, slow_free);
    uint64_t t0 = io_now_ms();
    assert_int_equal(io_call_wait(l, &r->call, 20), -ETIMEDOUT);
    assert_true(io_now_ms() - t0 < 190);
    /* Stopping drains the timer; the loop side then frees the abandoned request. */
    io_loop_stop(l, NULL, NULL);
    assert_int_equal(freed, 1);
}

struct flag_work {
    struct io_work work;
    int ran;
};

static void set_flag(struct io_work *w)
{
    ((struct flag_work *)w)->ran++;
}

static void stop_hook(uv_loop_t *loop, void *arg)
{
    (void)loop;
    *(int *)arg = 1;
}

/* Work posted before a stop runs exactly once, and the stop hook runs on the loop. */
static void test_io_loop_runs_posted_work_before_stop(void **state)
{
    (void)state;
    struct io_loop *l;
    int hook = 0;
    assert_int_equal(io_loop_start(&l), 0);
    struct flag_work w = {.work.fn = set_flag};
    assert_int_equal(io_loop_post(l, &w.work), 0);
    io_loop_stop(l, stop_hook, &hook);
    assert_int_equal(w.ran, 1);
    assert_int_equal(hook, 1);
}

/* While a thread is inside io_loop_enter/io_loop_leave, posted work and timers wait; they run
 * once it leaves, on the loop thread. */
struct enter_req {
    struct io_call call;
    struct io_loop *loop;
    _Atomic int *inside;
    int saw_inside;
};

static void enter_probe(struct io_work *w)
{
    struct enter_req *r = (struct enter_req *)w;
    assert_true(io_loop_is_current(r->loop));
    r->saw_inside = atomic_load(r->inside);
    io_call_done(&r->call, 0);
}

static void *enter_poster(void *arg)
{
    struct enter_req *r = arg;
    assert_int_equal(io_call_wait(r->loop, &r->call, 5000), 0);
    return NULL;
}

static void test_io_loop_enter_excludes_loop_callbacks(void **state)
{
    (void)state;
    struct io_loop *l;
    _Atomic int inside = 0;
    assert_int_equal(io_loop_start(&l), 0);
    for (int round = 0; round < 20; round++) {
        struct enter_req r = {.loop = l, .inside = &inside, .saw_inside = -1};
        io_call_init(&r.call, enter_probe, NULL);
        io_loop_enter(l);
        atomic_store(&inside, 1);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, enter_poster, &r), 0);
        usleep(round % 2 == 0 ? 2000 : 0); /* the post lands while we are inside */
        atomic_store(&inside, 0);
        io_loop_leave(l);
        pthread_join(t, NULL);
        assert_int_equal(r.saw_inside, 0);
        io_call_fini(&r.call);
    }
    io_loop_stop(l, NULL, NULL);
}

/* io_call_await_running: the waiter runs the loop itself. A timer it armed fires on its own
 * thread and completes the call; the loop thread stays out of the way meanwhile. */
struct run_req {
    struct io_call call;
    struct io_loop *loop;
    uv_timer_t timer;
    pthread_t fired_on;
    int is_current;
    int *freed;
};

static void run_req_free(struct io_call *c)
{
    struct run_req *r = (struct run_req *)c;
    *r->freed = 1;
    free(r);
}

static void run_timer_closed(uv_handle_t *h)
{
    struct run_req *r = h->data;
    io_call_done(&r->call, 42);
}

static void run_fire(uv_timer_t *t)
{
    struct run_req *r = t->data;
    r->fired_on = pthread_self();
    r->is_current = io_loop_is_current(r->loop);
    uv_close((uv_handle_t *)t, run_timer_closed);
}

static void run_arm(struct run_req *r, uint64_t ms)
{
    uv_timer_init(io_loop_uv(r->loop), &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, run_fire, ms, 0);
}

static void test_io_loop_runner_runs_the_loop_while_it_waits(void **state)
{
    (void)state;
    struct io_loop *l;
    assert_int_equal(io_loop_start(&l), 0);
    for (int round = 0; round < 10; round++) {
        struct run_req r = {.loop = l};
        io_call_init(&r.call, NULL, NULL);
        io_loop_enter(l);
        run_arm(&r, (uint64_t)(round % 3));
        assert_int_equal(io_call_await_running(l, &r.call, 5000), 42);
        assert_true(pthread_equal(r.fired_on, pthread_self()));
        assert_true(r.is_current);
        assert_false(io_loop_is_current(l));
        io_call_fini(&r.call);
    }
    io_loop_stop(l, NULL, NULL);
}

/* A call completed on another thread (as the disk thread completes one, inside io_loop_enter and
 * without waking the loop) still ends the runner's wait at once. */
struct remote_done {
    struct io_loop *loop;
    struct io_call *call;
};

static void *complete_later(void *arg)
{
    struct remote_done *d = arg;
    usleep(30 * 1000);
    io_loop_enter(d->loop);
    io_call_done(d->call, 5);
    io_loop_leave(d->loop);
    return NULL;
}

static void test_io_loop_runner_woken_by_a_completion_elsewhere(void **state)
{
    (void)state;
    struct io_loop *l;
    assert_int_equal(io_loop_start(&l), 0);
    for (int round = 0; round < 5; round++) {
        struct io_call call;
        io_call_init(&call, NULL, NULL);
        struct remote_done d = {.loop = l, .call = &call};
        pthread_t t;
        io_loop_enter(l);
        assert_int_equal(pthread_create(&t, NULL, complete_later, &d), 0);
        uint64_t t0 = io_now_ms();
        assert_int_equal(io_call_await_running(l, &call, 10000), 5);
        assert_true(io_now_ms() - t0 < 1000);
        pthread_join(t, NULL);
        io_call_fini(&call);
    }
    io_loop_stop(l, NULL, NULL);
}

/* A runner times out like any waiter; the loop side frees the request when it completes. Work
 * posted meanwhile runs (on the runner), and so does work posted after it left (the loop thread
 * takes over at once rather than after its next look). */
static void test_io_loop_runner_times_out_and_hands_back(void **state)
{
    (void)state;
    struct io_loop *l;
    int freed = 0;
    assert_int_equal(io_loop_start(&l), 0);
    struct run_req *r = calloc(1, sizeof *r);
    r->loop = l;
    r->freed = &freed;
    io_call_init(&r->call, NULL, run_req_free);
    io_loop_enter(l);
    run_arm(r, 300);
    struct flag_work w = {.work.fn = set_flag};
    assert_int_equal(io_loop_post(l, &w.work), 0);
    uint64_t t0 = io_now_ms();
    assert_int_equal(io_call_await_running(l, &r->call, 20), -ETIMEDOUT);
    assert_true(io_now_ms() - t0 < 250);
    assert_int_equal(w.ran, 1);
    for (int i = 0; i < 20; i++) {
        struct counter_req c = {.loop = l, .seen = &(int){0}, .value = 3};
        io_call_init(&c.call, record, NULL);
        assert_int_equal(io_call_wait(l, &c.call, 5000), 3);
        io_call_fini(&c.call);
    }
    io_loop_stop(l, NULL, NULL);
    assert_int_equal(freed, 1);
}

/* A timer a runner started fires on time after the runner left, although the loop thread was
 * waiting for events with a timeout it computed before (10 s here): the leaving runner wakes it. */
static void keepalive_fire(uv_timer_t *t)
{
    (void)t;
}

static void keepalive_stop(uv_loop_t *loop, void *arg)
{
    (void)loop;
    uv_close((uv_handle_t *)arg, NULL);
}

static bool always(void *arg)
{
    (void)arg;
    return true;
}

static void test_io_loop_timer_started_by_a_runner_fires_after_it_left(void **state)
{
    (void)state;
    struct io_loop *l;
    assert_int_equal(io_loop_start(&l), 0);
    uv_timer_t keep;
    io_loop_enter(l);
    uv_timer_init(io_loop_uv(l), &keep);
    uv_timer_start(&keep, keepalive_fire, 10000, 0);
    io_loop_leave_and_wake(l); /* the loop thread now waits for events for up to 10 s */
    for (int round = 0; round < 5; round++) {
        usleep(20 * 1000);
        int freed = 0;
        struct run_req *r = calloc(1, sizeof *r);
        assert_non_null(r);
        r->loop = l;
        r->freed = &freed; /* if the wait times out, the loop side frees it when it fires */
        io_call_init(&r->call, NULL, run_req_free);
        io_loop_enter(l);
        uv_update_time(io_loop_uv(l)); /* as a timer's starter off the loop thread must */
        run_arm(r, 5);
        uint64_t t0 = io_now_ms();
        assert_int_equal(io_loop_run_until(l, always, NULL, -1), 1); /* leaves at once */
        assert_int_equal(io_call_await(&r->call, 2000), 42);
        assert_true(io_now_ms() - t0 < 500);
        assert_false(pthread_equal(r->fired_on, pthread_self())); /* the loop thread ran it */
        io_call_fini(&r->call);
        free(r);
    }
    io_loop_stop(l, keepalive_stop, &keep);
}

/* Two waiters at once: one runs the loop, the other waits as io_call_await does; both finish. */
struct two_arg {
    struct io_loop *loop;
    int rc;
};

static void *run_one(void *arg)
{
    struct two_arg *a = arg;
    for (int i = 0; i < 50; i++) {
        struct run_req r = {.loop = a->loop};
        io_call_init(&r.call, NULL, NULL);
        io_loop_enter(a->loop);
        run_arm(&r, (uint64_t)(i % 2));
        int rc = io_call_await_running(a->loop, &r.call, 5000);
        io_call_fini(&r.call);
        if (rc != 42) {
            a->rc = rc;
            return NULL;
        }
    }
    a->rc = 42;
    return NULL;
}

static void test_io_loop_two_runners_take_turns(void **state)
{
    (void)state;
    struct io_loop *l;
    assert_int_equal(io_loop_start(&l), 0);
    struct two_arg a = {.loop = l}, b = {.loop = l};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, run_one, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, run_one, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 42);
    assert_int_equal(b.rc, 42);
    io_loop_stop(l, NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_loop_calls_run_on_loop_in_order),
        cmocka_unit_test(test_io_loop_waiter_times_out_and_loop_frees),
        cmocka_unit_test(test_io_loop_runs_posted_work_before_stop),
        cmocka_unit_test(test_io_loop_enter_excludes_loop_callbacks),
        cmocka_unit_test(test_io_loop_runner_runs_the_loop_while_it_waits),
        cmocka_unit_test(test_io_loop_runner_woken_by_a_completion_elsewhere),
        cmocka_unit_test(test_io_loop_runner_times_out_and_hands_back),
        cmocka_unit_test(test_io_loop_two_runners_take_turns),
        cmocka_unit_test(test_io_loop_timer_started_by_a_runner_fires_after_it_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
