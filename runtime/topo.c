/* Topology discovery (hwloc) and shard placement.
 *
 * Placement gives each shard a core of its own: a shard is a
 * run-to-completion loop, and two of them on hyperthreads of one core share
 * its pipeline and caches, so hyperthreads are used only when overcommitting.
 * Shards are spread evenly over NUMA nodes (so a node started with fewer
 * shards than cores still uses every memory controller) and numbered
 * contiguously within a node (so "shards 0-3 are on node 0" holds). */
#include <errno.h>
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "keel/runtime.h"
#include "runtime/runtime_internal.h"

int keel_topo_load(const char *synthetic, struct keel_topo **out, char *errmsg)
{
	*out = NULL;
	struct keel_topo *t = calloc(1, sizeof(*t));
	if (!t)
		return keel_errmsg_set(errmsg, -ENOMEM, "topology");
	if (hwloc_topology_init(&t->t) != 0) {
		int e = -errno;
		free(t);
		return keel_errmsg_set(errmsg, e ? e : -ENOMEM, "hwloc_topology_init");
	}
	if (synthetic) {
		if (hwloc_topology_set_synthetic(t->t, synthetic) != 0) {
			hwloc_topology_destroy(t->t);
			free(t);
			return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
					       "synthetic topology '%s' is not valid hwloc syntax "
					       "(e.g. \"pack:2 numa:2 core:4 pu:2\")",
					       synthetic);
		}
		t->synthetic = true;
	}
	if (hwloc_topology_load(t->t) != 0) {
		int e = -errno;
		hwloc_topology_destroy(t->t);
		free(t);
		return keel_errmsg_set(errmsg, e ? e : KEEL_ETOPO, "hwloc_topology_load");
	}
	*out = t;
	return 0;
}

void keel_topo_free(struct keel_topo *topo)
{
	if (!topo)
		return;
	hwloc_topology_destroy(topo->t);
	free(topo);
}

void keel_topo_get_counts(const struct keel_topo *topo, struct keel_topo_counts *out)
{
	hwloc_topology_t t = topo->t;
	int p = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
	int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
	int c = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
	int u = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
	out->packages = p > 0 ? (unsigned)p : 0;
	out->numa_nodes = n > 0 ? (unsigned)n : 0;
	out->cores = c > 0 ? (unsigned)c : 0;
	out->pus = u > 0 ? (unsigned)u : 0;
}

/* NUMA node (OS index) local to obj; 0 when hwloc does not say. */
static unsigned obj_numa(hwloc_obj_t obj)
{
	int n = obj->nodeset ? hwloc_bitmap_first(obj->nodeset) : -1;
	return n < 0 ? 0 : (unsigned)n;
}

/* The "core" objects placement works on: cores, or PUs where the
 * topology has no core level (some virtual machines). */
static hwloc_obj_type_t core_type(hwloc_topology_t t)
{
	return hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
}

void keel_topo_print(const struct keel_topo *topo, FILE *f)
{
	hwloc_topology_t t = topo->t;
	struct keel_topo_counts c;
	keel_topo_get_counts(topo, &c);
	fprintf(f, "topology%s: %u package%s, %u NUMA node%s, %u core%s, %u PU%s\n",
		topo->synthetic ? " (synthetic)" : "", c.packages, c.packages == 1 ? "" : "s",
		c.numa_nodes, c.numa_nodes == 1 ? "" : "s", c.cores, c.cores == 1 ? "" : "s",
		c.pus, c.pus == 1 ? "" : "s");
	hwloc_obj_type_t ct = core_type(t);
	int npack = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
	int nnuma = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
	hwloc_bitmap_t inter = hwloc_bitmap_alloc();
	char buf[256];
	for (int p = 0; p < (npack > 0 ? npack : 1); p++) {
		hwloc_obj_t pack = npack > 0 ? hwloc_get_obj_by_type(t, HWLOC_OBJ_PACKAGE, (unsigned)p)
					     : hwloc_get_root_obj(t);
		hwloc_bitmap_list_snprintf(buf, sizeof(buf), pack->cpuset);
		if (npack > 0)
			fprintf(f, "  package %u: PUs %s\n", pack->logical_index, buf);
		for (int n = 0; n < nnuma; n++) {
			hwloc_obj_t numa = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)n);
			hwloc_bitmap_and(inter, numa->cpuset, pack->cpuset);
			if (hwloc_bitmap_iszero(inter))
				continue;
			hwloc_bitmap_list_snprintf(buf, sizeof(buf), inter);
			unsigned long long mib = numa->attr ? numa->attr->numanode.local_memory >> 20 : 0;
			fprintf(f, "    NUMA node %u: PUs %s", numa->os_index, buf);
			if (mib)
				fprintf(f, ", %llu MiB", mib);
			fprintf(f, "\n");
			hwloc_obj_t core = NULL;
			while ((core = hwloc_get_next_obj_inside_cpuset_by_type(t, inter, ct, core))) {
				hwloc_bitmap_list_snprintf(buf, sizeof(buf), core->cpuset);
				fprintf(f, "      core %u: PU %s\n", core->logical_index, buf);
			}
		}
	}
	hwloc_bitmap_free(inter);
}

struct core_slot {
	unsigned core, numa;
	unsigned npus;
	unsigned pus[16]; /* allowed PUs of this core (OS indexes) */
};

int keel_topo_place(const struct keel_topo *topo, const struct keel_cpuset *allowed,
		    unsigned nshards, bool overcommit, struct keel_placement **out,
		    unsigned *nout, char *errmsg)
{
	hwloc_topology_t t = topo->t;
	*out = NULL;
	*nout = 0;
	char setbuf[256];
	hwloc_bitmap_list_snprintf(setbuf, sizeof(setbuf), hwloc_get_root_obj(t)->cpuset);
	if (allowed) {
		keel_cpuset_format(allowed, setbuf, sizeof(setbuf));
		if (keel_cpuset_count(allowed) == 0)
			return keel_errmsg_set(errmsg, KEEL_ETOPO, "placement: empty cpuset");
		for (unsigned c = 0; c < KEEL_CPUSET_MAX; c++) {
			if (keel_cpuset_isset(allowed, c) && !hwloc_get_pu_obj_by_os_index(t, c)) {
				char have[256];
				hwloc_obj_t root = hwloc_get_root_obj(t);
				hwloc_bitmap_list_snprintf(have, sizeof(have), root->cpuset);
				return keel_errmsg_set(errmsg, KEEL_ETOPO,
						       "placement: cpuset %s names CPU %u, which this "
						       "machine does not have (its PUs are %s)",
						       setbuf, c, have);
			}
		}
	}
	hwloc_obj_type_t ct = core_type(t);
	int ncores_all = hwloc_get_nbobjs_by_type(t, ct);
	if (ncores_all <= 0)
		return keel_errmsg_set(errmsg, KEEL_ETOPO, "placement: hwloc found no cores");
	struct core_slot *cores = calloc((size_t)ncores_all, sizeof(*cores));
	unsigned *numas = calloc((size_t)ncores_all, sizeof(*numas));
	unsigned *per_numa = calloc((size_t)ncores_all, sizeof(*per_numa));
	unsigned *give = calloc((size_t)ncores_all, sizeof(*give));
	struct keel_placement *pl = NULL;
	int rc = 0;
	if (!cores || !numas || !per_numa || !give) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "placement");
		goto out;
	}
	/* Cores with at least one allowed PU, in topology order. */
	unsigned ncores = 0, nnuma = 0;
	for (int i = 0; i < ncores_all; i++) {
		hwloc_obj_t core = hwloc_get_obj_by_type(t, ct, (unsigned)i);
		struct core_slot *cs = &cores[ncores];
		cs->core = core->logical_index;
		cs->numa = obj_numa(core);
		cs->npus = 0;
		hwloc_obj_t pu = NULL;
		while ((pu = hwloc_get_next_obj_inside_cpuset_by_type(t, core->cpuset, HWLOC_OBJ_PU, pu))) {
			if (allowed && !keel_cpuset_isset(allowed, pu->os_index))
				continue;
			if (cs->npus < KEEL_ARRAY_LEN(cs->pus))
				cs->pus[cs->npus++] = pu->os_index;
		}
		if (cs->npus == 0)
			continue;
		unsigned k;
		for (k = 0; k < nnuma && numas[k] != cs->numa; k++)
			;
		if (k == nnuma)
			numas[nnuma++] = cs->numa;
		per_numa[k]++;
		ncores++;
	}
	if (ncores == 0) {
		rc = keel_errmsg_set(errmsg, KEEL_ETOPO, "placement: cpuset %s has no usable PU",
				     setbuf);
		goto out;
	}
	unsigned n = nshards ? nshards : ncores;
	if (n > KEEL_MAX_SHARDS) {
		rc = keel_errmsg_set(errmsg, KEEL_ETOPO,
				     "placement: %u shards, more than the %u one process runs "
				     "(a ring per pair of shards: memory grows with the square)%s",
				     n, KEEL_MAX_SHARDS,
				     nshards ? "" : "; use --shards or a smaller cpuset");
		goto out;
	}
	if (n > ncores && !overcommit) {
		rc = keel_errmsg_set(errmsg, KEEL_ETOPO,
				     "placement: %u shards but cpuset %s has only %u core%s; "
				     "use --shards %u or fewer, or --overcommit to share cores",
				     n, setbuf, ncores, ncores == 1 ? "" : "s", ncores);
		goto out;
	}
	pl = calloc(n, sizeof(*pl));
	if (!pl) {
		rc = keel_errmsg_set(errmsg, -ENOMEM, "placement");
		goto out;
	}
	/* First min(n, ncores) shards: one core each, dealt round-robin over
	 * NUMA nodes so they spread evenly, then numbered node by node. */
	unsigned m = n < ncores ? n : ncores, left = m;
	while (left) {
		for (unsigned k = 0; k < nnuma && left; k++) {
			if (give[k] < per_numa[k]) {
				give[k]++;
				left--;
			}
		}
	}
	unsigned s = 0;
	for (unsigned k = 0; k < nnuma; k++) {
		unsigned taken = 0;
		for (unsigned i = 0; i < ncores && taken < give[k]; i++) {
			if (cores[i].numa != numas[k])
				continue;
			pl[s] = (struct keel_placement){s, cores[i].pus[0], cores[i].core, cores[i].numa};
			taken++;
			s++;
		}
	}
	/* Overcommit: shard i >= m shares shard (i % m)'s core, on its next
	 * allowed PU (a hyperthread) when it has one. */
	for (unsigned i = m; i < n; i++) {
		const struct keel_placement *base = &pl[i % m];
		const struct core_slot *cs = NULL;
		for (unsigned j = 0; j < ncores; j++)
			if (cores[j].core == base->core)
				cs = &cores[j];
		unsigned round = i / m;
		pl[i] = (struct keel_placement){i, cs->pus[round % cs->npus], base->core, base->numa_node};
	}
	*out = pl;
	*nout = n;
	pl = NULL;
out:
	free(pl);
	free(cores);
	free(numas);
	free(per_numa);
	free(give);
	return rc;
}

/* Binds the calling thread to PU `pu` (OS index). */
int keel_topo_bind_thread(const struct keel_topo *topo, unsigned pu, char *errmsg)
{
	hwloc_obj_t obj = hwloc_get_pu_obj_by_os_index(topo->t, pu);
	if (!obj)
		return keel_errmsg_set(errmsg, KEEL_ETOPO, "pin: no PU %u", pu);
	if (hwloc_set_cpubind(topo->t, obj->cpuset, HWLOC_CPUBIND_THREAD | HWLOC_CPUBIND_STRICT) != 0 &&
	    hwloc_set_cpubind(topo->t, obj->cpuset, HWLOC_CPUBIND_THREAD) != 0)
		return keel_errmsg_set(errmsg, -errno, "pin: hwloc_set_cpubind(PU %u)", pu);
	return 0;
}

/* Prefers NUMA node `node` for the calling thread's future allocations
 * (malloc included); best effort, as containers often forbid set_mempolicy. */
void keel_topo_bind_thread_memory(const struct keel_topo *topo, unsigned node)
{
	hwloc_bitmap_t ns = hwloc_bitmap_alloc();
	if (!ns)
		return;
	hwloc_bitmap_only(ns, node);
	if (hwloc_set_membind(topo->t, ns, HWLOC_MEMBIND_BIND,
			      HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET) != 0)
		keel_debug("membind: thread to NUMA node %u: %s", node, keel_strerror(-errno));
	hwloc_bitmap_free(ns);
}

/* Page-aligned, zeroed memory bound to NUMA node `node`. Fresh anonymous
 * pages are untouched, so binding before first touch places them without a
 * migration. Best effort: where the kernel refuses mbind (containers), the
 * memory still comes, unbound. */
void *keel_topo_alloc_on_node(const struct keel_topo *topo, unsigned node, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (!topo->synthetic) {
		hwloc_bitmap_t ns = hwloc_bitmap_alloc();
		if (ns) {
			hwloc_bitmap_only(ns, node);
			if (hwloc_set_area_membind(topo->t, p, len, ns, HWLOC_MEMBIND_BIND,
						   HWLOC_MEMBIND_BYNODESET) != 0)
				keel_debug("membind: %zu bytes to NUMA node %u: %s", len, node,
					   keel_strerror(-errno));
			hwloc_bitmap_free(ns);
		}
	}
	return p;
}

void keel_topo_free_on_node(const struct keel_topo *topo, void *p, size_t len)
{
	(void)topo;
	if (p)
		munmap(p, len);
}
