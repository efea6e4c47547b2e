/*
 * The epoll reactor. Each watched fd owns a small record that epoll hands
 * back; records of removed fds are freed only after the current dispatch
 * round, so a callback may remove any fd (its own included) safely.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "loop.h"
#include "util.h"
#include "banned.h"

struct watch {
	int fd;
	loop_fd_fn fn;
	void *arg;
	bool dead;
	struct watch *next; /* in the table's bucket or the graveyard */
};

struct post {
	loop_post_fn fn;
	void *arg;
	struct post *next;
};

#define WATCH_BUCKETS 256

struct loop {
	int epfd;
	int wakefd;
	bool stopping;
	struct watch *table[WATCH_BUCKETS];
	struct watch *graveyard;
	pthread_mutex_t lock; /* guards posts */
	struct post *posts, **posts_tail;
};

static struct watch **bucket(struct loop *loop, int fd)
{
	return &loop->table[(unsigned)fd % WATCH_BUCKETS];
}

static struct watch *find(struct loop *loop, int fd)
{
	struct watch *w;

	for (w = *bucket(loop, fd); w; w = w->next)
		if (w->fd == fd)
			return w;
	return NULL;
}

struct loop *loop_new(void)
{
	struct loop *loop = xcalloc(1, sizeof(*loop));
	struct epoll_event ev = {.events = EPOLLIN};

	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->epfd < 0 || loop->wakefd < 0)
		goto fail;
	ev.data.ptr = NULL; /* NULL marks the wake fd */
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
		goto fail;
	pthread_mutex_init(&loop->lock, NULL);
	loop->posts_tail = &loop->posts;
	return loop;
fail:
	fd_close(&loop->epfd);
	fd_close(&loop->wakefd);
	free(loop);
	return NULL;
}

static void bury_dead(struct loop *loop)
{
	while (loop->graveyard) {
		struct watch *w = loop->graveyard;

		loop->graveyard = w->next;
		free(w);
	}
}

void loop_free(struct loop *loop)
{
	size_t i;

	if (!loop)
		return;
	for (i = 0; i < WATCH_BUCKETS; i++) {
		while (loop->table[i]) {
			struct watch *w = loop->table[i];

			loop->table[i] = w->next;
			free(w);
		}
	}
	bury_dead(loop);
	while (loop->posts) {
		struct post *p = loop->posts;

		loop->posts = p->next;
		free(p);
	}
	pthread_mutex_destroy(&loop->lock);
	fd_close(&loop->epfd);
	fd_close(&loop->wakefd);
	free(loop);
}

int loop_add_fd(struct loop *loop, int fd, uint32_t events, loop_fd_fn fn,
		void *arg)
{
	struct watch *w = xcalloc(1, sizeof(*w));
	struct epoll_event ev = {.events = events, .data.ptr = w};

	w->fd = fd;
	w->fn = fn;
	w->arg = arg;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = errno;

		free(w);
		return -err;
	}
	w->next = *bucket(loop, fd);
	*bucket(loop, fd) = w;
	return 0;
}

int loop_mod_fd(struct loop *loop, int fd, uint32_t events)
{
	struct watch *w = find(loop, fd);
	struct epoll_event ev = {.events = events};

	if (!w)
		return -ENOENT;
	ev.data.ptr = w;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		return -errno;
	return 0;
}

int loop_del_fd(struct loop *loop, int fd)
{
	struct watch **pp, *w;

	for (pp = bucket(loop, fd); (w = *pp); pp = &w->next)
		if (w->fd == fd)
			break;
	if (!w)
		return -ENOENT;
	*pp = w->next;
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	w->dead = true;
	w->next = loop->graveyard;
	loop->graveyard = w;
	return 0;
}

void loop_post(struct loop *loop, loop_post_fn fn, void *arg)
{
	struct post *p = xmalloc(sizeof(*p));
	uint64_t one = 1;

	p->fn = fn;
	p->arg = arg;
	p->next = NULL;
	pthread_mutex_lock(&loop->lock);
	*loop->posts_tail = p;
	loop->posts_tail = &p->next;
	pthread_mutex_unlock(&loop->lock);
	if (write(loop->wakefd, &one, sizeof(one)) < 0) {
		/* the counter is full: a wake-up is already pending */
	}
}

static void run_posts(struct loop *loop)
{
	struct post *list;
	uint64_t n;

	if (read(loop->wakefd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing was pending */
	}
	pthread_mutex_lock(&loop->lock);
	list = loop->posts;
	loop->posts = NULL;
	loop->posts_tail = &loop->posts;
	pthread_mutex_unlock(&loop->lock);
	while (list) {
		struct post *p = list;

		list = p->next;
		p->fn(loop, p->arg);
		free(p);
	}
}

int loop_run_once(struct loop *loop, int timeout_ms)
{
	struct epoll_event evs[64];
	int n, i;

	n = epoll_wait(loop->epfd, evs, (int)ARRAY_SIZE(evs), timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (i = 0; i < n; i++) {
		struct watch *w = evs[i].data.ptr;

		if (!w) {
			run_posts(loop);
			continue;
		}
		if (!w->dead)
			w->fn(loop, w->fd, evs[i].events, w->arg);
	}
	bury_dead(loop);
	return 0;
}

void loop_run(struct loop *loop)
{
	loop->stopping = false;
	while (!__atomic_load_n(&loop->stopping, __ATOMIC_ACQUIRE))
		if (loop_run_once(loop, -1) < 0)
			break;
}

static void stop_cb(struct loop *loop, void *arg)
{
	(void)arg;
	__atomic_store_n(&loop->stopping, true, __ATOMIC_RELEASE);
}

void loop_stop(struct loop *loop)
{
	loop_post(loop, stop_cb, NULL);
}

int timer_fd_new(uint64_t ms, bool periodic)
{
	struct itimerspec its;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);

	if (fd < 0)
		return -errno;
	memset(&its, 0, sizeof(its));
	if (ms == 0)
		ms = 1;
	its.it_value.tv_sec = (time_t)(ms / 1000);
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	if (periodic)
		its.it_interval = its.it_value;
	if (timerfd_settime(fd, 0, &its, NULL) < 0) {
		int err = errno;

		fd_close(&fd);
		return -err;
	}
	return fd;
}
