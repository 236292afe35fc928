/* Placement on hwloc synthetic topologies (several NUMA nodes, which this
 * machine lacks) and strict --cpuset parsing. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "keel/runtime.h"

static struct keel_topo *load(const char *spec)
{
	struct keel_topo *t;
	char em[KEEL_ERRMSG_LEN];
	int rc = keel_topo_load(spec, &t, em);
	cr_assert_eq(rc, 0, "%s", em);
	return t;
}

static struct keel_cpuset parse(const char *s)
{
	struct keel_cpuset set;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_cpuset_parse(s, &set, em), 0, "%s: %s", s, em);
	return set;
}

Test(topo, synthetic_counts)
{
	struct keel_topo *t = load("pack:2 numa:2 core:4 pu:2");
	struct keel_topo_counts c;
	keel_topo_get_counts(t, &c);
	cr_expect_eq(c.packages, 2);
	cr_expect_eq(c.numa_nodes, 4);
	cr_expect_eq(c.cores, 16);
	cr_expect_eq(c.pus, 32);
	keel_topo_free(t);
}

Test(topo, default_is_one_shard_per_core_numa_contiguous)
{
	struct keel_topo *t = load("pack:2 numa:2 core:4 pu:2");
	struct keel_placement *pl;
	unsigned n;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_topo_place(t, NULL, 0, false, &pl, &n, em), 0, "%s", em);
	cr_assert_eq(n, 16);
	bool core_used[16] = {0};
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(pl[i].shard, i);
		cr_expect_eq(pl[i].numa_node, i / 4, "shard %u on node %u", i, pl[i].numa_node);
		cr_expect_eq(pl[i].pu, 2 * pl[i].core, "first PU of the core");
		cr_expect_not(core_used[pl[i].core], "core %u used twice", pl[i].core);
		core_used[pl[i].core] = true;
	}
	free(pl);
	keel_topo_free(t);
}

Test(topo, fewer_shards_spread_over_numa_nodes)
{
	struct keel_topo *t = load("pack:2 numa:2 core:4 pu:2");
	struct keel_placement *pl;
	unsigned n;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_topo_place(t, NULL, 6, false, &pl, &n, em), 0, "%s", em);
	cr_assert_eq(n, 6);
	/* 6 shards over 4 nodes: 2,2,1,1, numbered node by node */
	unsigned want_node[6] = {0, 0, 1, 1, 2, 3};
	unsigned want_pu[6] = {0, 2, 8, 10, 16, 24};
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(pl[i].numa_node, want_node[i], "shard %u", i);
		cr_expect_eq(pl[i].pu, want_pu[i], "shard %u", i);
	}
	free(pl);
	keel_topo_free(t);
}

Test(topo, too_many_shards_is_a_clear_error)
{
	struct keel_topo *t = load("pack:1 numa:2 core:2 pu:2");
	struct keel_placement *pl = NULL;
	unsigned n = 0;
	char em[KEEL_ERRMSG_LEN] = "";
	int rc = keel_topo_place(t, NULL, 64, false, &pl, &n, em);
	cr_expect_eq(rc, KEEL_ETOPO);
	cr_expect_null(pl);
	cr_expect(strstr(em, "64 shards") && strstr(em, "4 cores") && strstr(em, "--overcommit"),
		  "message: %s", em);
	keel_topo_free(t);
}

Test(topo, overcommit_uses_hyperthreads_then_wraps)
{
	struct keel_topo *t = load("pack:1 numa:2 core:2 pu:2");
	struct keel_placement *pl;
	unsigned n;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_topo_place(t, NULL, 10, true, &pl, &n, em), 0, "%s", em);
	cr_assert_eq(n, 10);
	/* cores 0..3 have PUs {0,1},{2,3},{4,5},{6,7}; nodes 0,0,1,1 */
	unsigned want_pu[10] = {0, 2, 4, 6, 1, 3, 5, 7, 0, 2};
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(pl[i].pu, want_pu[i], "shard %u on PU %u", i, pl[i].pu);
		cr_expect_eq(pl[i].numa_node, pl[i].pu / 4);
		cr_expect_eq(pl[i].core, pl[i].pu / 2);
	}
	free(pl);
	keel_topo_free(t);
}

/* Memory grows with the square of the shard count (a ring per pair), so
 * even --overcommit stops at KEEL_MAX_SHARDS, as does one shard per core
 * of a cpuset bigger than that. */
Test(topo, shard_count_capped_even_overcommitted)
{
	struct keel_topo *t = load("pack:1 numa:1 core:2 pu:2");
	struct keel_placement *pl;
	unsigned n;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_topo_place(t, NULL, KEEL_MAX_SHARDS, true, &pl, &n, em), 0, "%s", em);
	cr_expect_eq(n, KEEL_MAX_SHARDS);
	free(pl);
	cr_expect_eq(keel_topo_place(t, NULL, KEEL_MAX_SHARDS + 1, true, &pl, &n, em), KEEL_ETOPO);
	cr_expect(strstr(em, "257 shards, more than the 256 one process runs"), "%s", em);
	keel_topo_free(t);
	t = load("pack:1 numa:2 core:160 pu:1");
	cr_expect_eq(keel_topo_place(t, NULL, 0, false, &pl, &n, em), KEEL_ETOPO);
	cr_expect(strstr(em, "320 shards") && strstr(em, "use --shards or a smaller cpuset"), "%s", em);
	keel_topo_free(t);
}

Test(topo, cpuset_restricts_cores_and_counts_cores_not_pus)
{
	struct keel_topo *t = load("pack:2 numa:2 core:4 pu:2");
	struct keel_cpuset set = parse("0-3,17,24-25");
	struct keel_placement *pl;
	unsigned n;
	char em[KEEL_ERRMSG_LEN];
	cr_assert_eq(keel_topo_place(t, &set, 0, false, &pl, &n, em), 0, "%s", em);
	/* PUs 0-3 = cores 0,1 (node 0); 17 = core 8 (node 2); 24-25 = core 12 (node 3) */
	cr_assert_eq(n, 4);
	unsigned want_pu[4] = {0, 2, 17, 24};
	unsigned want_node[4] = {0, 0, 2, 3};
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(pl[i].pu, want_pu[i], "shard %u PU %u", i, pl[i].pu);
		cr_expect_eq(pl[i].numa_node, want_node[i]);
	}
	free(pl);
	pl = NULL;
	cr_expect_eq(keel_topo_place(t, &set, 5, false, &pl, &n, em), KEEL_ETOPO);
	cr_expect(strstr(em, "0-3,17,24-25") && strstr(em, "only 4 cores"), "message: %s", em);
	keel_topo_free(t);
}

Test(topo, cpuset_with_missing_cpu_is_an_error)
{
	struct keel_topo *t = load("pack:1 numa:2 core:2 pu:1");
	struct keel_cpuset set = parse("0,9");
	struct keel_placement *pl = NULL;
	unsigned n;
	char em[KEEL_ERRMSG_LEN] = "";
	cr_expect_eq(keel_topo_place(t, &set, 0, false, &pl, &n, em), KEEL_ETOPO);
	cr_expect(strstr(em, "CPU 9") != NULL, "message: %s", em);
	keel_topo_free(t);
}

Test(topo, bad_synthetic_spec)
{
	struct keel_topo *t = NULL;
	char em[KEEL_ERRMSG_LEN] = "";
	cr_expect_eq(keel_topo_load("pack:2 bogus:x", &t, em), KEEL_EBADINPUT);
	cr_expect_null(t);
	cr_expect(strstr(em, "bogus") != NULL, "%s", em);
}

Test(cpuset, parses_lists_ranges_strides)
{
	struct keel_cpuset s = parse("0-3,8,10-15:2,1023");
	unsigned want[] = {0, 1, 2, 3, 8, 10, 12, 14, 1023};
	cr_expect_eq(keel_cpuset_count(&s), KEEL_ARRAY_LEN(want));
	for (size_t i = 0; i < KEEL_ARRAY_LEN(want); i++)
		cr_expect(keel_cpuset_isset(&s, want[i]), "cpu %u", want[i]);
	char buf[64];
	keel_cpuset_format(&s, buf, sizeof(buf));
	cr_expect_str_eq(buf, "0-3,8,10,12,14,1023");
	s = parse("7");
	keel_cpuset_format(&s, buf, sizeof(buf));
	cr_expect_str_eq(buf, "7");
	s = parse("3,1,2,1");
	keel_cpuset_format(&s, buf, sizeof(buf));
	cr_expect_str_eq(buf, "1-3");
}

Test(cpuset, rejects_bad_input_with_a_message)
{
	static const char *bad[] = {
		"", ",", "0,", ",0", "0,,1", "a", "1a", "0-", "-1", "3-1", "0 - 3", " 0", "0 ",
		"+1", "0x3", "1-2-3", "0-3:", "0-3:0", "0-3:x", "1024", "99999999999999999999",
		"0:2", "0;1", "1.5", "0-1023,1024",
	};
	for (size_t i = 0; i < KEEL_ARRAY_LEN(bad); i++) {
		struct keel_cpuset s;
		char em[KEEL_ERRMSG_LEN] = "";
		int rc = keel_cpuset_parse(bad[i], &s, em);
		cr_expect_eq(rc, KEEL_EBADINPUT, "'%s' accepted", bad[i]);
		cr_expect(strlen(em) > 0 && strstr(em, "cpuset"), "'%s': no message", bad[i]);
	}
	struct keel_cpuset s;
	cr_expect_eq(keel_cpuset_parse(NULL, &s, NULL), KEEL_EBADINPUT);
	char em[KEEL_ERRMSG_LEN];
	keel_cpuset_parse("0-3,9-5", &s, em);
	cr_expect(strstr(em, "9-5") && strstr(em, "backwards"), "%s", em);
	keel_cpuset_parse("2000", &s, em);
	cr_expect(strstr(em, "above 1023"), "%s", em);
}
