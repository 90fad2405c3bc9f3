// SPDX-License-Identifier: GPL-2.0
/*
 * rp-writer: N threads of random O_DIRECT writes of mixed sizes to a device,
 * every acknowledged write logged so that rp-verify can check the device.
 *
 * The span [--offset, --offset + --span) is cut into one contiguous stripe
 * per thread, so no two threads ever touch the same 4 KiB block and each
 * thread's log, in file order, is the order of the writes to its blocks.
 * Data come from rp-pattern.h: (seed, generation, block offset) -> content.
 *
 * --log-sync makes the log survive a crash of the machine: each record is
 * written with one write() to a log opened O_DSYNC, after the write it logs
 * was acknowledged and before the thread's next write is issued, so after a
 * crash each thread has at most one write beyond its log (in flight, or
 * acknowledged but not yet logged): the one with the next generation
 * (rp-verify --crashed). Put the logs on a file system on a disk that
 * survives the crash.
 *
 * Exit: 0 every write acknowledged, 3 some writes failed (see the summary),
 * 2 setup error (or a log write failed), 64 usage. SIGINT/SIGTERM stop the writers cleanly (logs kept).
 * Prints the slowest write: "writer: max_latency_ms=X at=T".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rp-pattern.h"

#define RP_MAX_THREADS 64
#define RP_MAX_REPORTED_ERRORS 5

struct writer_opts {
	const char *dev;
	const char *log_prefix;
	unsigned int threads;
	uint64_t offset, span;
	uint64_t min_size, max_size;
	uint64_t count, bytes;	/* totals over all threads, 0 = no limit */
	double seconds;		/* 0 = no limit */
	uint64_t seed;
	bool stop_on_error;
	bool fsync_at_end;
	bool dsync;		/* O_DSYNC: each write has FUA */
	bool log_sync;		/* each record durable before the next write */
	uint64_t misalign;	/* the buffer this far past a page boundary */
};

struct writer_thread {
	pthread_t tid;
	unsigned int index;
	const struct writer_opts *opts;
	int fd;
	uint64_t stripe_first, stripe_blocks;	/* in RP_BLOCK units */
	uint64_t count_limit, bytes_limit;
	uint64_t seed;
	FILE *log;		/* without --log-sync */
	int log_fd;		/* with --log-sync: O_DSYNC */
	const char *log_path;
	/* results */
	uint64_t acked, failed, acked_bytes;
	int first_errno;
	uint64_t max_lat_ns, max_lat_start_ns;	/* slowest write, its start */
};

static atomic_bool stop_all;
static atomic_int errors_reported;
static struct timespec deadline;
static bool have_deadline;

static void usage(void)
{
	fprintf(stderr,
		"usage: rp-writer --dev PATH --log PREFIX [--threads N] [--offset B] [--span B]\n"
		"                 [--min-size B] [--max-size B] [--count N] [--bytes B] [--seconds S]\n"
		"                 [--seed S] [--stop-on-error | --continue-on-error] [--fsync]\n"
		"                 [--dsync] [--log-sync] [--misalign B]\n"
		"  sizes take K/M/G suffixes; logs go to PREFIX.<thread>; defaults: 4 threads,\n"
		"  the whole device, 4K..1M, --continue-on-error; at least one of --count,\n"
		"  --bytes, --seconds is required (totals over all threads).\n"
		"  --dsync: the device is opened O_DSYNC (each write is sent with FUA).\n"
		"  --log-sync: every log record is durable (O_DSYNC) before the next write.\n"
		"  --misalign: the data buffer starts B bytes past a page boundary (B < 4096),\n"
		"  as an application's whose buffer is only as aligned as the device demands.\n");
	exit(64);
}

/* SIGINT/SIGTERM: every thread stops after its current write; logs and the
 * summary are written as usual (exit status as if the limit was reached). */
static void on_stop_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_all, true);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static bool past_deadline(void)
{
	struct timespec now;

	if (!have_deadline)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline.tv_sec ||
	       (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec);
}

/* A size in blocks: a power-of-two band picked uniformly, then uniform inside it. */
static uint64_t pick_blocks(struct writer_thread *t, uint64_t min_blocks,
			    uint64_t max_blocks)
{
	unsigned int lo = 63 - __builtin_clzll(min_blocks);
	unsigned int hi = 63 - __builtin_clzll(max_blocks);
	unsigned int band = lo + rp_splitmix64(&t->seed) % (hi - lo + 1);
	uint64_t n = (1ull << band) + rp_splitmix64(&t->seed) % (1ull << band);

	if (n < min_blocks)
		n = min_blocks;
	if (n > max_blocks)
		n = max_blocks;
	return n;
}

/* One log record (a whole line). With --log-sync one write() to the O_DSYNC
 * log: on return the record is on the disk. A log that cannot be written
 * makes the run worthless: exit 2 at once. */
static void log_line(struct writer_thread *t, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		fprintf(stderr, "rp-writer: log record too long\n");
		exit(2);
	}
	if (!t->opts->log_sync) {
		fputs(line, t->log);
		return;
	}
	if (write(t->log_fd, line, n) != n) {
		fprintf(stderr, "rp-writer: writing log %s: %s\n", t->log_path,
			strerror(errno));
		exit(2);
	}
}

static void report_error(struct writer_thread *t, uint64_t off, uint64_t len,
			 int err)
{
	if (atomic_fetch_add(&errors_reported, 1) < RP_MAX_REPORTED_ERRORS)
		fprintf(stderr, "rp-writer: thread %u: write offset=%" PRIu64
			" length=%" PRIu64 ": %s\n", t->index, off, len,
			err ? strerror(err) : "short write");
}

static void *writer_main(void *arg)
{
	struct writer_thread *t = arg;
	const struct writer_opts *o = t->opts;
	uint64_t max_blocks = o->max_size / RP_BLOCK;
	uint64_t min_blocks = o->min_size / RP_BLOCK;
	uint64_t base_seed = t->seed, gen = 0, done_bytes = 0;
	unsigned char *buf;

	if (max_blocks > t->stripe_blocks)
		max_blocks = t->stripe_blocks;
	if (min_blocks > max_blocks)
		min_blocks = max_blocks;
	if (posix_memalign((void **)&buf, RP_BLOCK,
			   (max_blocks + 1) * RP_BLOCK)) {
		fprintf(stderr, "rp-writer: out of memory\n");
		exit(2);
	}
	buf += o->misalign;
	/* the stream that picks sizes and offsets, distinct from the data seed */
	t->seed = base_seed ^ 0x5851f42d4c957f2dull;

	while (!atomic_load(&stop_all)) {
		uint64_t nblk, first, off, len, csum, i;
		ssize_t ret;
		int err = 0;

		if (t->count_limit && t->acked + t->failed >= t->count_limit)
			break;
		if (t->bytes_limit && done_bytes >= t->bytes_limit)
			break;
		if (past_deadline())
			break;

		nblk = pick_blocks(t, min_blocks, max_blocks);
		first = t->stripe_first +
			rp_splitmix64(&t->seed) % (t->stripe_blocks - nblk + 1);
		off = first * RP_BLOCK;
		len = nblk * RP_BLOCK;
		gen++;
		for (i = 0; i < nblk; i++)
			rp_fill_block(buf + i * RP_BLOCK, base_seed, gen,
				      off + i * RP_BLOCK);

		uint64_t t0 = mono_ns(), lat;

		ret = pwrite(t->fd, buf, len, off);
		if (ret < 0)
			err = errno;
		lat = mono_ns() - t0;
		if (lat > t->max_lat_ns) {
			t->max_lat_ns = lat;
			t->max_lat_start_ns = t0;
		}
		else if ((uint64_t)ret != len)
			err = EIO;
		done_bytes += len;

		if (err) {
			t->failed++;
			if (!t->first_errno)
				t->first_errno = err;
			report_error(t, off, len, ret < 0 ? err : 0);
			log_line(t, "F %" PRIu64 " %" PRIu64 " %" PRIu64
				 " %" PRIu64 " %d\n", base_seed, gen, off, len, err);
			if (o->stop_on_error)
				atomic_store(&stop_all, true);
			continue;
		}
		csum = rp_checksum(RP_CHECKSUM_INIT, buf, len);
		t->acked++;
		t->acked_bytes += len;
		log_line(t, "A %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
			 " %016" PRIx64 "\n", base_seed, gen, off, len, csum);
	}
	if (o->fsync_at_end && fdatasync(t->fd)) {
		fprintf(stderr, "rp-writer: thread %u: fdatasync: %s\n",
			t->index, strerror(errno));
		if (!t->first_errno)
			t->first_errno = errno;
		t->failed++;
	}
	free(buf - o->misalign);
	return NULL;
}

static uint64_t device_size(int fd, const char *path)
{
	struct stat st;
	uint64_t size;

	if (fstat(fd, &st)) {
		fprintf(stderr, "rp-writer: stat %s: %s\n", path, strerror(errno));
		exit(2);
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size)) {
			fprintf(stderr, "rp-writer: BLKGETSIZE64 %s: %s\n", path,
				strerror(errno));
			exit(2);
		}
		return size;
	}
	return st.st_size;
}

static uint64_t size_arg(const char *opt, const char *val)
{
	uint64_t v;

	if (!val || rp_parse_size(val, &v)) {
		fprintf(stderr, "rp-writer: %s needs a size\n", opt);
		usage();
	}
	return v;
}

static void parse_args(int argc, char **argv, struct writer_opts *o)
{
	int i;

	*o = (struct writer_opts){ .threads = 4, .min_size = 4096,
				   .max_size = 1 << 20, .seed = 1 };
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--stop-on-error")) {
			o->stop_on_error = true;
			continue;
		} else if (!strcmp(a, "--continue-on-error")) {
			o->stop_on_error = false;
			continue;
		} else if (!strcmp(a, "--fsync")) {
			o->fsync_at_end = true;
			continue;
		} else if (!strcmp(a, "--dsync")) {
			o->dsync = true;
			continue;
		} else if (!strcmp(a, "--log-sync")) {
			o->log_sync = true;
			continue;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage();
		}
		if (!v) {
			fprintf(stderr, "rp-writer: %s needs a value\n", a);
			usage();
		}
		i++;
		if (!strcmp(a, "--dev"))
			o->dev = v;
		else if (!strcmp(a, "--log"))
			o->log_prefix = v;
		else if (!strcmp(a, "--threads"))
			o->threads = size_arg(a, v);
		else if (!strcmp(a, "--offset"))
			o->offset = size_arg(a, v);
		else if (!strcmp(a, "--span"))
			o->span = size_arg(a, v);
		else if (!strcmp(a, "--min-size"))
			o->min_size = size_arg(a, v);
		else if (!strcmp(a, "--max-size"))
			o->max_size = size_arg(a, v);
		else if (!strcmp(a, "--count"))
			o->count = size_arg(a, v);
		else if (!strcmp(a, "--bytes"))
			o->bytes = size_arg(a, v);
		else if (!strcmp(a, "--seconds"))
			o->seconds = strtod(v, NULL);
		else if (!strcmp(a, "--seed"))
			o->seed = size_arg(a, v);
		else if (!strcmp(a, "--misalign"))
			o->misalign = size_arg(a, v);
		else {
			fprintf(stderr, "rp-writer: unknown option %s\n", a);
			usage();
		}
	}
	if (!o->dev || !o->log_prefix)
		usage();
	if (!o->count && !o->bytes && o->seconds <= 0) {
		fprintf(stderr, "rp-writer: give --count, --bytes or --seconds\n");
		usage();
	}
	if (o->threads < 1 || o->threads > RP_MAX_THREADS ||
	    o->misalign >= RP_BLOCK ||
	    o->offset % RP_BLOCK || o->span % RP_BLOCK ||
	    o->min_size % RP_BLOCK || o->max_size % RP_BLOCK ||
	    !o->min_size || o->min_size > o->max_size) {
		fprintf(stderr, "rp-writer: threads 1..%d; offset, span and sizes multiples of %u, min <= max\n",
			RP_MAX_THREADS, RP_BLOCK);
		usage();
	}
}

int main(int argc, char **argv)
{
	struct writer_thread threads[RP_MAX_THREADS] = { 0 };
	struct writer_opts o;
	uint64_t size, blocks, per_thread, acked = 0, failed = 0, bytes = 0;
	uint64_t seed_state, max_lat = 0, max_lat_start = 0;
	unsigned int i;
	int fd;

	parse_args(argc, argv, &o);
	fd = open(o.dev, O_WRONLY | O_DIRECT | (o.dsync ? O_DSYNC : 0));
	if (fd < 0) {
		fprintf(stderr, "rp-writer: open %s: %s\n", o.dev, strerror(errno));
		return 2;
	}
	size = device_size(fd, o.dev);
	if (!o.span)
		o.span = size > o.offset ? (size - o.offset) / RP_BLOCK * RP_BLOCK : 0;
	if (o.offset + o.span > size) {
		fprintf(stderr, "rp-writer: span ends at %" PRIu64 ", past the end of %s (%" PRIu64 " bytes)\n",
			o.offset + o.span, o.dev, size);
		return 2;
	}
	blocks = o.span / RP_BLOCK;
	per_thread = blocks / o.threads;
	if (!per_thread) {
		fprintf(stderr, "rp-writer: span too small for %u threads\n", o.threads);
		return 2;
	}
	if (o.seconds > 0) {
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += (time_t)o.seconds;
		deadline.tv_nsec += (long)((o.seconds - (time_t)o.seconds) * 1e9);
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		have_deadline = true;
	}

	signal(SIGINT, on_stop_signal);
	signal(SIGTERM, on_stop_signal);
	seed_state = o.seed;
	static char paths[RP_MAX_THREADS][4096];

	for (i = 0; i < o.threads; i++) {
		struct writer_thread *t = &threads[i];
		char *path = paths[i];

		t->index = i;
		t->opts = &o;
		t->fd = fd;
		t->stripe_first = o.offset / RP_BLOCK + i * per_thread;
		t->stripe_blocks = per_thread;
		t->seed = rp_splitmix64(&seed_state);
		if (o.count)
			t->count_limit = o.count / o.threads + (i < o.count % o.threads);
		if (o.bytes)
			t->bytes_limit = (o.bytes + o.threads - 1) / o.threads;
		snprintf(path, sizeof(paths[i]), "%s.%u", o.log_prefix, i);
		t->log_path = path;
		if (o.log_sync) {
			t->log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC |
					 O_DSYNC | O_CLOEXEC, 0644);
			if (t->log_fd < 0) {
				fprintf(stderr, "rp-writer: open log %s: %s\n", path, strerror(errno));
				return 2;
			}
		} else {
			t->log = fopen(path, "w");
			if (!t->log) {
				fprintf(stderr, "rp-writer: open log %s: %s\n", path, strerror(errno));
				return 2;
			}
		}
		log_line(t, "# rp-writer dev=%s thread=%u seed=%" PRIu64
			 " stripe=%" PRIu64 "+%" PRIu64 "\n", o.dev, i, t->seed,
			 t->stripe_first * RP_BLOCK, t->stripe_blocks * RP_BLOCK);
	}
	if (o.log_sync) { /* the new log files' names are durable too */
		char dir[4096];
		int dfd;

		snprintf(dir, sizeof(dir), "%s", o.log_prefix);
		dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd)) {
			fprintf(stderr, "rp-writer: fsync the log directory of %s: %s\n",
				o.log_prefix, strerror(errno));
			return 2;
		}
		close(dfd);
	}
	for (i = 0; i < o.threads; i++) {
		int err = pthread_create(&threads[i].tid, NULL, writer_main, &threads[i]);

		if (err) {
			fprintf(stderr, "rp-writer: pthread_create: %s\n", strerror(err));
			return 2;
		}
	}
	for (i = 0; i < o.threads; i++) {
		struct writer_thread *t = &threads[i];

		pthread_join(t->tid, NULL);
		if (o.log_sync ? close(t->log_fd) : fclose(t->log)) {
			fprintf(stderr, "rp-writer: writing log %s.%u: %s\n",
				o.log_prefix, i, strerror(errno));
			return 2;
		}
		acked += t->acked;
		failed += t->failed;
		bytes += t->acked_bytes;
		if (t->max_lat_ns > max_lat) {
			max_lat = t->max_lat_ns;
			max_lat_start = t->max_lat_start_ns;
		}
	}
	close(fd);
	printf("writer: acked=%" PRIu64 " failed=%" PRIu64 " bytes=%" PRIu64 "\n",
	       acked, failed, bytes);
	/* the slowest write (issue to completion) and when it was issued, in
	 * CLOCK_MONOTONIC seconds (= /proc/uptime's first field when the
	 * machine never suspended) */
	printf("writer: max_latency_ms=%.1f at=%.3f\n", max_lat / 1e6,
	       max_lat_start / 1e9);
	for (i = 0; i < o.threads; i++)
		if (threads[i].first_errno) {
			printf("writer: first error %s (errno=%d)\n",
			       strerrorname_np(threads[i].first_errno) ?: "?",
			       threads[i].first_errno);
			break;
		}
	return failed ? 3 : 0;
}
