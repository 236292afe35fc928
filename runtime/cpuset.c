/* CPU sets in cpuset(7) list format. Strict on purpose: a typo in --cpuset
 * that silently placed shards elsewhere would be much harder to notice than
 * an error naming the bad item. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "keel/runtime.h"

void keel_cpuset_zero(struct keel_cpuset *set) { memset(set, 0, sizeof(*set)); }

void keel_cpuset_set(struct keel_cpuset *set, unsigned cpu)
{
	if (cpu < KEEL_CPUSET_MAX)
		set->bits[cpu / 64] |= 1ull << (cpu % 64);
}

bool keel_cpuset_isset(const struct keel_cpuset *set, unsigned cpu)
{
	return cpu < KEEL_CPUSET_MAX && (set->bits[cpu / 64] >> (cpu % 64)) & 1;
}

unsigned keel_cpuset_count(const struct keel_cpuset *set)
{
	unsigned n = 0;
	for (size_t i = 0; i < KEEL_ARRAY_LEN(set->bits); i++)
		n += (unsigned)__builtin_popcountll(set->bits[i]);
	return n;
}

/* Reads a decimal number at *p (digits only); returns 0, or -1 if there is
 * no digit or it is >= KEEL_CPUSET_MAX (*big set then). */
static int parse_num(const char **p, unsigned *out, bool *big)
{
	const char *s = *p;
	unsigned long v = 0;
	if (*s < '0' || *s > '9')
		return -1;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (unsigned long)(*s - '0');
		if (v >= KEEL_CPUSET_MAX) {
			*big = true;
			return -1;
		}
		s++;
	}
	*p = s;
	*out = (unsigned)v;
	return 0;
}

int keel_cpuset_parse(const char *list, struct keel_cpuset *out, char *errmsg)
{
	keel_cpuset_zero(out);
	if (!list || !*list)
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
				       "cpuset: empty list (expected e.g. 0-3,8)");
	const char *p = list;
	for (;;) {
		const char *item = p;
		unsigned lo, hi, stride = 1;
		bool big = false;
		size_t itemlen = strcspn(item, ",");
		if (parse_num(&p, &lo, &big))
			goto bad;
		hi = lo;
		if (*p == '-') {
			p++;
			if (parse_num(&p, &hi, &big))
				goto bad;
			if (*p == ':') {
				p++;
				if (parse_num(&p, &stride, &big) || stride == 0)
					goto bad;
			}
			if (lo > hi)
				return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
						       "cpuset '%s': range '%.*s' runs backwards",
						       list, (int)itemlen, item);
		}
		if (*p != ',' && *p != '\0')
			goto bad;
		for (unsigned c = lo; c <= hi; c += stride)
			keel_cpuset_set(out, c);
		if (*p == '\0')
			return 0;
		p++; /* ',' */
		continue;
	bad:
		if (big)
			return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
					       "cpuset '%s': item '%.*s' names a CPU above %d",
					       list, (int)itemlen, item, KEEL_CPUSET_MAX - 1);
		return keel_errmsg_set(errmsg, KEEL_EBADINPUT,
				       "cpuset '%s': bad item '%.*s' at offset %d "
				       "(expected N, N-M or N-M:STRIDE, comma-separated)",
				       list, (int)itemlen, item, (int)(item - list));
	}
}

int keel_cpuset_format(const struct keel_cpuset *set, char *buf, size_t len)
{
	size_t n = 0;
	bool first = true;
	if (len)
		buf[0] = '\0';
	for (unsigned c = 0; c < KEEL_CPUSET_MAX; c++) {
		if (!keel_cpuset_isset(set, c))
			continue;
		unsigned e = c;
		while (e + 1 < KEEL_CPUSET_MAX && keel_cpuset_isset(set, e + 1))
			e++;
		char tmp[32];
		int m = (e == c) ? snprintf(tmp, sizeof(tmp), "%s%u", first ? "" : ",", c)
				 : snprintf(tmp, sizeof(tmp), "%s%u-%u", first ? "" : ",", c, e);
		if (n + (size_t)m < len)
			memcpy(buf + n, tmp, (size_t)m + 1);
		else if (len)
			buf[len - 1] = '\0';
		n += (size_t)m;
		first = false;
		c = e;
	}
	return (int)n;
}
