/*
 * The process's loop thread and the queue other threads use to reach it. See loop.h.
 */
#include "consensus/io/loop.h"

#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct io_loop {
    uv_loop_t loop;
    uv_async_t async; /* wakes the loop when work is queued */
    uv_thread_t thread;
    pthread_mutex_t big; /* held by the loop thread except while it waits for events */
    atomic_int runners;  /* 1 while a thread is in io_loop_run_until: the loop thread steps aside */
    atomic_bool parked;  /* the loop thread waits on park_cv, not on events */
    /* When the loop thread's wait for events ends by itself, io_now_ms; UINT64_MAX: never; 0
     * while it does not wait for events. */
    _Atomic uint64_t sleep_until_ms;
    _Atomic pthread_t runner_tid; /* the thread in io_loop_run_until, while `running` */
    atomic_bool running;
    pthread_cond_t park_cv;
    pthread_mutex_t mu; /* guards head, tail, stopping */
    struct io_work *head, *tail;
    bool stopping;
    void (*on_stop)(uv_loop_t *loop, void *arg);
    void *on_stop_arg;
    pthread_t tid;
    pthread_mutex_t start_mu;
    pthread_cond_t start_cv;
    bool started;
};

/* How long the loop thread sleeps while another thread runs the loop: first LOOP_PARK_MS, then
 * twice as long each time it finds that thread still there, up to LOOP_PARK_MAX_MS. A thread that
 * stops running the loop for long says so (io_loop_wake); one that leaves briefly (a writer
 * between two commits, a disk thread during a write) does not, and events that arrive meanwhile
 * wait for it or for the loop thread's next look. */
#define LOOP_PARK_MS 1
#define LOOP_PARK_MAX_MS 16

/* How late a timer started by a thread in io_loop_run_until may fire before that thread, leaving,
 * wakes the loop thread for it. */
#define LOOP_LATE_MS 1

struct timespec io_deadline_ms(int64_t ms)
{
    assert(ms >= 0);
    return io_timespec_us(io_now_us() + (uint64_t)ms * 1000u);
}

void io_cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

uint64_t io_now_ms(void)
{
    return io_now_us() / 1000u;
}

uint64_t io_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct timespec io_timespec_us(uint64_t at_us)
{
    struct timespec ts = {.tv_sec = (time_t)(at_us / 1000000u),
                          .tv_nsec = (long)(at_us % 1000000u) * 1000L};
    return ts;
}

static void close_async_cb(uv_handle_t *h)
{
    (void)h;
}

/* Drains the queue; runs on the loop thread. */
static void drain(uv_async_t *a)
{
    struct io_loop *l = a->data;
    struct io_work *w;
    bool stopping;

    pthread_mutex_lock(&l->mu);
    w = l->head;
    l->head = l->tail = NULL;
    stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);

    while (w != NULL) {
        struct io_work *next = w->next;
        w->next = NULL;
        w->fn(w);
        w = next;
    }
    if (stopping) {
        if (l->on_stop != NULL) {
            l->on_stop(&l->loop, l->on_stop_arg);
            l->on_stop = NULL;
        }
        if (!uv_is_closing((uv_handle_t *)&l->async)) {
            uv_close((uv_handle_t *)&l->async, close_async_cb);
        }
    }
}

/* Wakes whoever runs the loop: the thread polling its events (the loop thread or one in
 * io_loop_run_until), and the loop thread if it stepped aside for a thread that has left. */
static void kick(struct io_loop *l)
{
    uv_async_send(&l->async);
    if (atomic_load(&l->parked) && atomic_load(&l->runners) == 0) {
        pthread_cond_signal(&l->park_cv);
    }
}

static void run(void *arg)
{
    struct io_loop *l = arg;
    pthread_setname_np(pthread_self(), "walraft-loop"); /* as top -H and perf show it */
    pthread_mutex_lock(&l->start_mu);
    l->tid = pthread_self();
    l->started = true;
    pthread_cond_signal(&l->start_cv);
    pthread_mutex_unlock(&l->start_mu);
    /* uv_run(UV_RUN_DEFAULT), except that the wait for events happens outside `big`: callbacks
     * run under it, so io_loop_enter can exclude them. */
    pthread_mutex_lock(&l->big);
    int park_ms = LOOP_PARK_MS;
    for (;;) {
        if (atomic_load(&l->runners) > 0) {
            /* Another thread runs the loop (io_loop_run_until). Stay out of its way: polling too
             * would wake two threads for each event, and running the loop here could consume
             * the wake-up meant for it. Look again soon, as it may leave without a word: after
             * LOOP_PARK_MS, then at doubling intervals while it stays (an idle follower's disk
             * thread runs the loop for as long as no entry comes). */
            struct timespec ts = io_deadline_ms(park_ms);
            atomic_store(&l->parked, true);
            pthread_cond_timedwait(&l->park_cv, &l->big, &ts);
            atomic_store(&l->parked, false);
            if (park_ms < LOOP_PARK_MAX_MS) {
                park_ms *= 2;
            }
            continue;
        }
        park_ms = LOOP_PARK_MS;
        if (uv_run(&l->loop, UV_RUN_NOWAIT) == 0) {
            break;
        }
        struct pollfd pfd = {.fd = uv_backend_fd(&l->loop), .events = POLLIN};
        int timeout = uv_backend_timeout(&l->loop);
        atomic_store(&l->sleep_until_ms, timeout < 0 ? UINT64_MAX : io_now_ms() + (uint64_t)timeout);
        pthread_mutex_unlock(&l->big);
        (void)poll(&pfd, 1, timeout); /* EINTR: run once more */
        atomic_store(&l->sleep_until_ms, 0);
        pthread_mutex_lock(&l->big);
    }
    pthread_mutex_unlock(&l->big);
}

int io_loop_start(struct io_loop **out)
{
    struct io_loop *l = calloc(1, sizeof *l);
    int rv;
    if (l == NULL) {
        return -ENOMEM;
    }
    rv = uv_loop_init(&l->loop);
    if (rv != 0) {
        goto err_after_alloc;
    }
    rv = uv_async_init(&l->loop, &l->async, drain);
    if (rv != 0) {
        goto err_after_loop;
    }
    l->async.data = l;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->big, NULL);
    atomic_init(&l->runners, 0);
    atomic_init(&l->parked, false);
    atomic_init(&l->running, false);
    io_cond_init_monotonic(&l->park_cv);
    pthread_mutex_init(&l->start_mu, NULL);
    pthread_cond_init(&l->start_cv, NULL);
    rv = uv_thread_create(&l->thread, run, l);
    if (rv != 0) {
        goto err_after_async;
    }
    pthread_mutex_lock(&l->start_mu);
    while (!l->started) {
        pthread_cond_wait(&l->start_cv, &l->start_mu);
    }
    pthread_mutex_unlock(&l->start_mu);
    *out = l;
    return 0;

err_after_async:
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->big);
    pthread_cond_destroy(&l->park_cv);
    pthread_mutex_destroy(&l->start_mu);
    pthread_cond_destroy(&l->start_cv);
    uv_close((uv_handle_t *)&l->async, NULL);
    uv_run(&l->loop, UV_RUN_DEFAULT);
err_after_loop:
    uv_loop_close(&l->loop);
err_after_alloc:
    free(l);
    return rv;
}

void io_loop_stop(struct io_loop *l, void (*on_stop)(uv_loop_t *loop, void *arg), void *arg)
{
    assert(!io_loop_is_current(l));
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    l->on_stop = on_stop;
    l->on_stop_arg = arg;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
    uv_thread_join(&l->thread);
    /* Work queued after the stop flag was read never runs; nothing may be left. */
    assert(l->head == NULL);
    uv_loop_close(&l->loop);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->big);
    pthread_cond_destroy(&l->park_cv);
    pthread_mutex_destroy(&l->start_mu);
    pthread_cond_destroy(&l->start_cv);
    free(l);
}

void io_loop_enter(struct io_loop *l)
{
    assert(!io_loop_is_current(l));
    pthread_mutex_lock(&l->big);
}

void io_loop_leave(struct io_loop *l)
{
    pthread_mutex_unlock(&l->big);
}

void io_loop_leave_and_wake(struct io_loop *l)
{
    pthread_mutex_unlock(&l->big);
    kick(l);
}

uv_loop_t *io_loop_uv(struct io_loop *l)
{
    return &l->loop;
}

bool io_loop_is_current(const struct io_loop *l)
{
    return l->started && (pthread_equal(pthread_self(), l->tid) ||
                          (atomic_load(&l->running) &&
                           pthread_equal(pthread_self(), atomic_load(&l->runner_tid))));
}

int io_loop_post(struct io_loop *l, struct io_work *w)
{
    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        return -ESHUTDOWN;
    }
    w->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = w;
    } else {
        l->head = w;
    }
    l->tail = w;
    pthread_mutex_unlock(&l->mu);
    kick(l);
    return 0;
}

void io_call_init(struct io_call *c, void (*fn)(struct io_work *w), void (*free_fn)(struct io_call *c))
{
    memset(c, 0, sizeof *c);
    c->work.fn = fn;
    c->free_fn = free_fn;
    pthread_mutex_init(&c->mu, NULL);
    io_cond_init_monotonic(&c->cv);
}

void io_call_fini(struct io_call *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

int io_call_wait(struct io_loop *l, struct io_call *c, int64_t timeout_ms)
{
    assert(!io_loop_is_current(l));
    int rc = io_loop_post(l, &c->work);
    if (rc != 0) {
        return rc;
    }
    return io_call_await(c, timeout_ms);
}

int io_call_await(struct io_call *c, int64_t timeout_ms)
{
    struct timespec deadline = {0};
    int rc;

    if (timeout_ms >= 0) {
        deadline = io_deadline_ms(timeout_ms);
    }
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &deadline) == ETIMEDOUT && !c->done) {
            assert(c->free_fn != NULL);
            c->abandoned = true;
            pthread_mutex_unlock(&c->mu);
            return -ETIMEDOUT;
        }
    }
    rc = c->rc;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int io_loop_run_until(struct io_loop *l, bool (*done)(void *arg), void *arg, int64_t timeout_ms)
{
    assert(!io_loop_is_current(l));
    int none = 0;
    if (!atomic_compare_exchange_strong(&l->runners, &none, 1)) {
        return -1;
    }
    struct timespec deadline = {0};
    if (timeout_ms >= 0) {
        deadline = io_deadline_ms(timeout_ms);
    }
    atomic_store(&l->runner_tid, pthread_self());
    atomic_store(&l->running, true);
    int rc, timeout = -1;
    for (;;) {
        /* Holding big, as the loop thread would. */
        uv_run(&l->loop, UV_RUN_NOWAIT);
        timeout = uv_backend_timeout(&l->loop);
        pthread_mutex_unlock(&l->big);
        if (done(arg)) {
            rc = 1;
            break;
        }
        if (timeout_ms >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t left = (int64_t)(deadline.tv_sec - now.tv_sec) * 1000 +
                           (deadline.tv_nsec - now.tv_nsec) / 1000000;
            if (left <= 0) {
                rc = 0;
                break;
            }
            if (timeout < 0 || timeout > left) {
                timeout = (int)(left < INT32_MAX ? left : INT32_MAX);
            }
        }
        /* Whoever makes done() true on another thread wakes this poll (io_loop_wake), and
         * nobody else runs the loop meanwhile to consume that wake-up. */
        struct pollfd pfd = {.fd = uv_backend_fd(&l->loop), .events = POLLIN};
        (void)poll(&pfd, 1, timeout); /* EINTR: run once more */
        pthread_mutex_lock(&l->big);
    }
    atomic_store(&l->running, false);
    atomic_store(&l->runners, 0);
    /* A timer started meanwhile (say, to tell followers of a commit) is due before the loop
     * thread, which computed its wait for events earlier, would look again: wake it, or the
     * timer fires that late (a heartbeat tick later, say). A parked loop thread is not woken:
     * it looks again within its park, short unless runs keep it parked (a steady stream of
     * commits, whose next proposal soon runs the loop). */
    uint64_t until = atomic_load(&l->sleep_until_ms);
    if (timeout >= 0 && until != 0 && until > io_now_ms() + (uint64_t)timeout + LOOP_LATE_MS) {
        kick(l);
    }
    return rc;
}

void io_loop_wake(struct io_loop *l)
{
    kick(l);
}

static bool call_done(void *arg)
{
    struct io_call *c = arg;
    pthread_mutex_lock(&c->mu);
    bool done = c->done;
    pthread_mutex_unlock(&c->mu);
    return done;
}

int io_call_await_running(struct io_loop *l, struct io_call *c, int64_t timeout_ms)
{
    pthread_mutex_lock(&c->mu);
    c->runner = l;
    c->runner_tid = pthread_self();
    pthread_mutex_unlock(&c->mu);
    int ran = io_loop_run_until(l, call_done, c, timeout_ms);
    pthread_mutex_lock(&c->mu);
    c->runner = NULL;
    pthread_mutex_unlock(&c->mu);
    if (ran < 0) { /* another thread runs the loop: wait as usual */
        io_loop_leave_and_wake(l);
    }
    return io_call_await(c, ran == 0 ? 0 : timeout_ms); /* done, or times out at once */
}

void io_call_done(struct io_call *c, int rc)
{
    bool abandoned;
    pthread_mutex_lock(&c->mu);
    c->rc = rc;
    c->done = true;
    abandoned = c->abandoned;
    pthread_cond_signal(&c->cv);
    if (c->runner != NULL && !pthread_equal(c->runner_tid, pthread_self())) {
        uv_async_send(&c->runner->async); /* its poll returns; it finds the call done */
    }
    pthread_mutex_unlock(&c->mu);
    if (abandoned) {
        io_call_fini(c);
        c->free_fn(c);
    }
}
