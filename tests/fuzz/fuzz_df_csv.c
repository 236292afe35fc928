/*
 * Fuzzes the dataflow's CSV input path: the bytes become lineitem.csv of
 * the join + group-by job (keel_df_jg_run), read through the text source
 * (map-reduce's splitter, with 64-byte splits so rows straddle them) and
 * parsed row by row. Any input either runs (every line read once: the
 * join's count never exceeds the lines) or fails with KEEL_EBADINPUT and a
 * message naming the file and the byte offset of the row.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/dataflow.h"

static char dir[64], orders[128], lineitem[128];

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/keel-fuzz-df.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(orders, sizeof orders, "%s/orders.csv", dir);
	snprintf(lineitem, sizeof lineitem, "%s/lineitem.csv", dir);
	FILE *f = fopen(orders, "w");
	if (!f)
		abort();
	for (int o = 1; o <= 20; o++)
		fprintf(f, "%d,%d,%d\n", o, o * 7, o % 5 + 1);
	fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!dir[0])
		setup();
	FILE *f = fopen(lineitem, "w");
	if (!f)
		abort();
	if (size && fwrite(data, 1, size, f) != size)
		abort();
	fclose(f);
	uint64_t lines = size ? 1 : 0;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	char err[KEEL_ERRMSG_LEN];
	struct keel_df_config cfg = {.shards = 1, .partitions = 2, .spill_dir = dir};
	struct keel_df_ctx *c = keel_df_ctx_new(&cfg, err);
	if (!c)
		abort();
	struct keel_df_jg_row rows[KEEL_DF_PRIORITIES];
	int rc = keel_df_jg_run(c, orders, lineitem, 1000000, 64, rows, err);
	if (rc == 0) {
		uint64_t n = 0;
		for (int p = 0; p < KEEL_DF_PRIORITIES; p++)
			n += rows[p].count;
		if (n > lines)
			abort();
	} else if (rc != KEEL_EBADINPUT || !strstr(err, "lineitem.csv at byte")) {
		fprintf(stderr, "unexpected error %d: %s\n", rc, err);
		abort();
	}
	keel_df_ctx_free(c);
	return 0;
}
