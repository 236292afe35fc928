/* The one table of message types on the peer mesh (keel/node.h). A layer
 * claims its type here, by name, and nowhere else: two layers can never
 * pick the same number, and `keel topo` can list what a node speaks.
 * Numbers are part of the wire protocol: never reuse or renumber one;
 * retire it with a comment instead. */
#include <string.h>

#include "keel/node.h"

static const struct keel_msg_type_info types[] = {
	{"raft", 0x0101, true, "Raft messages of one consensus group"},
	{"paxos", 0x0102, true, "Multi-Paxos messages of one consensus group"},
	{"fwd", 0x0103, true, "a client request forwarded to its group's leader, and the answer"},
	{"mr", 0x0201, false, "map-reduce: coordinator, node agents, shuffle"},
	{"df", 0x0202, false, "dataflow: scheduler, executors, shuffle"},
	{"stream.data", 0x0301, false, "verified test stream (keel send): data"},
	{"stream.done", 0x0302, false, "verified test stream: end of stream"},
	{"stream.report", 0x0303, false, "verified test stream: the receiver's report"},
	{"stream.ping", 0x0304, false, "verified test stream: echoed back"},
};

int keel_msg_type_id(const char *name)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(types); i++)
		if (!strcmp(types[i].name, name))
			return types[i].id;
	return KEEL_ENOTFOUND;
}

const struct keel_msg_type_info *keel_msg_type_by_id(uint16_t id)
{
	for (size_t i = 0; i < KEEL_ARRAY_LEN(types); i++)
		if (types[i].id == id)
			return &types[i];
	return NULL;
}

const struct keel_msg_type_info *keel_msg_types(size_t *n)
{
	*n = KEEL_ARRAY_LEN(types);
	return types;
}
