/*
 * A small epoll reactor. One thread runs a loop; other threads hand it work
 * with loop_post(). Timers are timerfds watched like any other fd, so a
 * thousand sleeping sandboxes cost a thousand fds and no threads.
 */
#ifndef SBX_LOOP_H
#define SBX_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;

/* Called with the epoll events that fired for fd. */
typedef void (*loop_fd_fn)(struct loop *loop, int fd, uint32_t events,
			   void *arg);
typedef void (*loop_post_fn)(struct loop *loop, void *arg);

/* Returns a new loop or NULL with errno set. Free with loop_free(). */
struct loop *loop_new(void);
void loop_free(struct loop *loop);

/* Watches fd for events (EPOLLIN, EPOLLOUT...). The fd stays the caller's;
 * remove it with loop_del_fd() before closing it. Returns 0 or -errno. */
int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn,
		void *arg);
int loop_mod_fd(struct loop *loop, int fd, uint32_t events);
int loop_del_fd(struct loop *loop, int fd);

/* Runs fn(loop, arg) on the loop's thread soon. Safe from any thread. */
void loop_post(struct loop *loop, loop_post_fn fn, void *arg);

/* Waits up to timeout_ms (-1: forever) and dispatches what is ready.
 * Returns 0 or -errno. */
int loop_run_once(struct loop *loop, int timeout_ms);
/* Runs until loop_stop() is called from a callback or another thread. */
void loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/* Returns a new CLOEXEC, non-blocking timerfd that fires once after ms
 * milliseconds (or every ms when periodic), or -errno. */
int timer_fd_new(uint64_t ms, bool periodic);

#endif
