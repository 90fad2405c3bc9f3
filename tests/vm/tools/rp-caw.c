// SPDX-License-Identifier: GPL-2.0
/*
 * rp-caw: one SCSI COMPARE AND WRITE (opcode 0x89) of one logical block,
 * through SG_IO, as VMware's ATS and cluster file systems send them.
 *
 *   rp-caw DEV LBA
 *
 * Reads the block at LBA (O_DIRECT), then asks the device to compare it
 * with what was read and, if equal, write a new pattern (the LBA and the
 * time in every 8 bytes). Prints "caw: status=0 ms=N" and exits 0 when the
 * command ended GOOD; otherwise its SCSI status, host status and sense key,
 * and exits 1. Usage errors exit 64.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	unsigned char cdb[16] = { 0x89 }, sense[32] = { 0 };
	unsigned long long lba;
	struct sg_io_hdr io;
	unsigned char *buf;
	int fd, bs = 0, i, key;
	double t0;
	char *end;

	if (argc != 3) {
		fprintf(stderr, "usage: rp-caw DEV LBA\n");
		return 64;
	}
	lba = strtoull(argv[2], &end, 0);
	if (*end || !*argv[2]) {
		fprintf(stderr, "rp-caw: bad LBA '%s'\n", argv[2]);
		return 64;
	}
	fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0 || ioctl(fd, BLKSSZGET, &bs) < 0 || bs <= 0) {
		fprintf(stderr, "rp-caw: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* The compare buffer, then the write buffer: one block each. */
	if (posix_memalign((void **)&buf, 4096, 2 * (size_t)bs)) {
		fprintf(stderr, "rp-caw: no memory\n");
		return 1;
	}
	if (pread(fd, buf, bs, (off_t)(lba * bs)) != bs) {
		fprintf(stderr, "rp-caw: read LBA %llu of %s: %s\n", lba,
			argv[1], strerror(errno));
		return 1;
	}
	t0 = now_ms();
	for (i = 0; i + 8 <= bs; i += 8) {
		uint64_t word = lba ^ (uint64_t)t0 ^ (uint64_t)i << 32;

		memcpy(buf + bs + i, &word, 8);
	}
	for (i = 0; i < 8; i++)
		cdb[2 + i] = lba >> (56 - 8 * i);
	cdb[13] = 1; /* NUMBER OF LOGICAL BLOCKS */

	memset(&io, 0, sizeof(io));
	io.interface_id = 'S';
	io.dxfer_direction = SG_DXFER_TO_DEV;
	io.cmd_len = sizeof(cdb);
	io.cmdp = cdb;
	io.mx_sb_len = sizeof(sense);
	io.sbp = sense;
	io.dxfer_len = 2 * bs;
	io.dxferp = buf;
	io.timeout = 120000; /* ms: past what a test waits for */
	if (ioctl(fd, SG_IO, &io) < 0) {
		fprintf(stderr, "rp-caw: SG_IO on %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	/* The sense key: fixed format in byte 2, descriptor format in 1. */
	key = io.sb_len_wr < 3 ? 0 :
	      (sense[0] & 0x7f) >= 0x72 ? sense[1] & 0x0f : sense[2] & 0x0f;
	printf("caw: status=%d host=%d driver=%d sense_key=%d ms=%.0f\n",
	       io.status, io.host_status, io.driver_status, key,
	       now_ms() - t0);
	return io.status || io.host_status || (io.driver_status & ~0x08) ? 1 : 0;
}
