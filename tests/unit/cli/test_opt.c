/* The option parser (cli/opt.h): values and their range messages, the
 * command-line forms, positional arguments, usage errors (exit 2, message
 * and "try" line on stderr), --help from the table (exit 0, stdout). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/opt.h"

/* Runs keel_opt_parse with stdout and stderr captured. */
struct run {
	int status, nargs;
	char out[4096], err[4096];
};

static void slurp(FILE *f, char *buf, size_t cap)
{
	rewind(f);
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
}

static int count_args(char **argv)
{
	int n = 0;
	while (argv[n])
		n++;
	return n;
}

static struct run run(const struct keel_cmd_spec *spec, int argc, char **argv)
{
	struct run r;
	if (argc < 0)
		argc = count_args(argv);
	fflush(stdout);
	fflush(stderr);
	int o = dup(1), e = dup(2);
	FILE *fo = tmpfile(), *fe = tmpfile();
	cr_assert(fo && fe);
	dup2(fileno(fo), 1);
	dup2(fileno(fe), 2);
	r.status = keel_opt_parse(spec, argc, argv, &r.nargs);
	fflush(stdout);
	fflush(stderr);
	dup2(o, 1);
	dup2(e, 2);
	close(o);
	close(e);
	slurp(fo, r.out, sizeof(r.out));
	slurp(fe, r.err, sizeof(r.err));
	return r;
}

#define ARGV(...) ((char *[]){"demo", __VA_ARGS__, NULL})
#define RUN(spec, ...) run(spec, -1, ARGV(__VA_ARGS__))

/* One command with every kind. */
static const char *config;
static bool fast;
static uint32_t shards;
static uint64_t count, size, ms;
static struct keel_opt_list inputs;
static const struct keel_opt opts[] = {
	{"config", 'c', KEEL_OPT_STR, &config, .arg = "FILE", .help = "the configuration",
	 .flags = KEEL_OPT_REQUIRED},
	{"fast", 'f', KEEL_OPT_FLAG, &fast, .help = "go fast"},
	{"shards", 0, KEEL_OPT_U32, &shards, 1, 64, "N", "shards", .def = "one per core"},
	{"count", 'n', KEEL_OPT_U64, &count, 1, 1000000000, "N", "messages"},
	{"mem", 0, KEEL_OPT_SIZE, &size, 1 << 20, 1ull << 30, "BYTES", "memory"},
	{"timeout-ms", 0, KEEL_OPT_MS, &ms, 1, 86400000, "MS", "deadline"},
	{"input", 'i', KEEL_OPT_LIST, &inputs, .arg = "PATH", .help = "an input\n(repeatable)"},
	{0},
};
static const struct keel_cmd_spec spec = {
	.name = "demo",
	.synopsis = "JOB --config FILE [options]",
	.about = "  does things.\n",
	.opts = opts,
	.min_args = 1,
	.max_args = 2,
	.args_name = "JOB",
};

static void reset(void)
{
	config = NULL;
	fast = false;
	shards = 0;
	count = 100000;
	size = 256 << 20;
	ms = 120000;
	keel_opt_list_free(&inputs);
}

TestSuite(opt, .init = reset, .fini = reset);

Test(opt, values_and_forms)
{
	char **av = ARGV("-c", "a.ini", "job", "--count=42", "--shards", "64", "-f", "--mem", "2M",
			 "--timeout-ms", "1m", "-ix", "--input", "-", "second");
	struct run r = run(&spec, -1, av);
	cr_assert_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect_str_eq(config, "a.ini");
	cr_expect(fast);
	cr_expect_eq(shards, 64);
	cr_expect_eq(count, 42);
	cr_expect_eq(size, 2 << 20);
	cr_expect_eq(ms, 60000);
	cr_assert_eq(inputs.n, 2);
	cr_expect_str_eq(inputs.v[0], "x");
	cr_expect_str_eq(inputs.v[1], "-", "'-' is a value (stdin), not an option");
	/* positionals moved to argv[1..], in order */
	cr_assert_eq(r.nargs, 2);
	cr_expect_str_eq(av[1], "job");
	cr_expect_str_eq(av[2], "second");
	cr_expect_str_eq(r.out, "");
	cr_expect_str_eq(r.err, "");
}

Test(opt, double_dash_ends_options)
{
	char **av = ARGV("-c", "x", "--", "--count", "-f");
	struct run r = run(&spec, -1, av);
	cr_assert_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect_eq(r.nargs, 2);
	cr_expect_str_eq(av[2], "-f");
	cr_expect(!fast);
	av = ARGV("-c", "x", "--", "--count");
	r = run(&spec, -1, av);
	cr_assert_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect_eq(r.nargs, 1);
	cr_expect_str_eq(av[1], "--count");
	cr_expect_eq(count, 100000);
}

static void expect_usage(struct run r, const char *msg)
{
	char want[512];
	snprintf(want, sizeof(want), "keel demo: %s\ntry 'keel demo --help'\n", msg);
	cr_expect_eq(r.status, 2, "status %d for '%s'", r.status, msg);
	cr_expect_str_eq(r.err, want);
	cr_expect_str_eq(r.out, "");
}

Test(opt, usage_errors)
{
	expect_usage(RUN(&spec, "job", "-c", "x", "--bogus"), "unknown option '--bogus'");
	expect_usage(RUN(&spec, "job", "-c", "x", "--bogus=1"), "unknown option '--bogus'");
	expect_usage(RUN(&spec, "job", "-c", "x", "-z"), "unknown option '-z'");
	expect_usage(RUN(&spec, "job", "-c", "x", "--coun", "5"), "unknown option '--coun'");
	expect_usage(RUN(&spec, "job", "-c", "x", "--count"), "--count needs a value (N)");
	expect_usage(RUN(&spec, "job", "--config", "--count", "5"), "--config needs a value (FILE)");
	expect_usage(RUN(&spec, "job", "-c", "x", "--fast=yes"), "--fast takes no value");
	expect_usage(RUN(&spec, "job", "-c", "x", "-fx"), "unknown option '-fx' (-f takes no value)");
	expect_usage(RUN(&spec, "job"), "--config FILE is required");
	expect_usage(RUN(&spec, "-c", "x"), "missing JOB");
	expect_usage(RUN(&spec, "-c", "x", "a", "b", "c"), "unexpected argument 'c'");
	expect_usage(RUN(&spec, "job", "-c", "x", "--count", "abc"),
		     "--count: 'abc' is not a number (expected 1..1000000000)");
	expect_usage(RUN(&spec, "job", "-c", "x", "--shards", "-1"),
		     "--shards: '-1' is out of range (expected 1..64)");
	expect_usage(RUN(&spec, "job", "-c", "x", "--shards", "65"),
		     "--shards: '65' is out of range (expected 1..64)");
	expect_usage(RUN(&spec, "job", "-c", "x", "--mem", "0"),
		     "--mem: '0' is out of range (expected 1M..1G; suffixes K, M, G, T)");
	expect_usage(RUN(&spec, "job", "-c", "x", "--timeout-ms", "abc"),
		     "--timeout-ms: 'abc' is not a duration (expected 1ms..24h; a bare number is ms, "
		     "or use s, m, h)");
}

Test(opt, numbers)
{
	struct keel_opt u32 = {"n", 0, KEEL_OPT_U32, &shards, 0, 0};
	struct keel_opt u64 = {"n", 0, KEEL_OPT_U64, &count, 0, 0};
	struct keel_opt sz = {"n", 0, KEEL_OPT_SIZE, &size, 0, 0};
	struct keel_opt d = {"n", 0, KEEL_OPT_MS, &ms, 0, 0};
	char err[KEEL_ERRMSG_LEN];
	cr_expect_eq(keel_opt_value(&u32, "4294967295", err), 0);
	cr_expect_eq(shards, UINT32_MAX);
	cr_expect_eq(keel_opt_value(&u32, "4294967296", err), KEEL_EBADINPUT);
	cr_expect_str_eq(err, "--n: '4294967296' is out of range (expected 0..4294967295)");
	cr_expect_eq(keel_opt_value(&u64, "18446744073709551615", err), 0);
	cr_expect_eq(count, UINT64_MAX);
	cr_expect_eq(keel_opt_value(&u64, "18446744073709551616", err), KEEL_EBADINPUT);
	cr_expect_eq(keel_opt_value(&u64, "99999999999999999999999999", err), KEEL_EBADINPUT);
	cr_expect(strstr(err, "is out of range"), "%s", err);
	static const char *not_numbers[] = {"", " 1", "1 ", "+1", "0x10", "1.5", "1e3", "--1", "-", "1K"};
	for (size_t i = 0; i < sizeof(not_numbers) / sizeof(*not_numbers); i++) {
		cr_expect_eq(keel_opt_value(&u64, not_numbers[i], err), KEEL_EBADINPUT, "'%s'",
			     not_numbers[i]);
		cr_expect(strstr(err, "is not a number"), "'%s': %s", not_numbers[i], err);
	}
	cr_expect_eq(keel_opt_value(&u64, "007", err), 0);
	cr_expect_eq(count, 7);
	cr_expect_eq(keel_opt_value(&sz, "3k", err), 0);
	cr_expect_eq(size, 3072);
	cr_expect_eq(keel_opt_value(&sz, "1T", err), 0);
	cr_expect_eq(size, 1ull << 40);
	cr_expect_eq(keel_opt_value(&sz, "17179869184G", err), KEEL_EBADINPUT, "overflows");
	cr_expect(strstr(err, "out of range"), "%s", err);
	cr_expect_eq(keel_opt_value(&sz, "1KB", err), KEEL_EBADINPUT);
	cr_expect(strstr(err, "is not a size"), "%s", err);
	cr_expect_eq(keel_opt_value(&d, "250", err), 0);
	cr_expect_eq(ms, 250);
	cr_expect_eq(keel_opt_value(&d, "250ms", err), 0);
	cr_expect_eq(ms, 250);
	cr_expect_eq(keel_opt_value(&d, "3s", err), 0);
	cr_expect_eq(ms, 3000);
	cr_expect_eq(keel_opt_value(&d, "2h", err), 0);
	cr_expect_eq(ms, 7200000);
	cr_expect_eq(keel_opt_value(&d, "2d", err), KEEL_EBADINPUT);
	cr_expect_eq(keel_opt_value(&d, "s", err), KEEL_EBADINPUT);
	cr_expect(strstr(err, "is not a duration"), "%s", err);
}

Test(opt, last_value_wins)
{
	struct run r = RUN(&spec, "j", "-c", "a", "-n", "1", "--count", "2", "-c", "b");
	cr_assert_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect_eq(count, 2);
	cr_expect_str_eq(config, "b");
}

Test(opt, help_from_the_table)
{
	/* --help wins wherever it is, even after a bad value, and shows the
	 * table's defaults, not what earlier options set */
	struct run r = RUN(&spec, "--count", "5", "--shards", "abc", "--help");
	cr_assert_eq(r.status, 0);
	cr_expect_str_eq(r.err, "");
	const char *want =
		"usage: keel demo JOB --config FILE [options]\n"
		"  does things.\n"
		"\n"
		"options:\n"
		"  -c, --config FILE    the configuration (required)\n"
		"  -f, --fast           go fast\n"
		"      --shards N       shards (1..64, default one per core)\n"
		"  -n, --count N        messages (1..1000000000, default 100000)\n"
		"      --mem BYTES      memory (1M..1G, default 256M)\n"
		"      --timeout-ms MS  deadline (1ms..24h, default 2m)\n"
		"  -i, --input PATH     an input\n"
		"                       (repeatable)\n"
		"  -h, --help           print this help and exit\n";
	cr_expect_str_eq(r.out, want);
	r = RUN(&spec, "-h");
	cr_expect_eq(r.status, 0);
	cr_expect_str_eq(r.out, want);
	/* a value that is literally "-h" is a value */
	r = RUN(&spec, "j", "-c", "-h");
	cr_expect_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect_str_eq(config, "-h");
}

Test(opt, hidden_options_are_accepted_not_listed)
{
	bool old = false;
	const struct keel_opt h[] = {
		{"new", 0, KEEL_OPT_FLAG, &fast, .help = "the new spelling"},
		{"old", 0, KEEL_OPT_FLAG, &old, .help = "the old one", .flags = KEEL_OPT_HIDDEN},
		{0},
	};
	const struct keel_cmd_spec hs = {.name = "demo", .opts = h};
	struct run r = run(&hs, -1, (char *[]){"demo", "--old", NULL});
	cr_expect_eq(r.status, KEEL_OPT_RUN, "%s", r.err);
	cr_expect(old);
	r = run(&hs, -1, (char *[]){"demo", "--help", NULL});
	cr_expect_eq(r.status, 0);
	cr_expect(strstr(r.out, "--new") && !strstr(r.out, "--old"), "%s", r.out);
	expect_usage(run(&hs, -1, (char *[]){"demo", "--help=x", NULL}), "--help takes no value");
}

Test(opt, no_options_no_arguments)
{
	const struct keel_cmd_spec v = {.name = "version"};
	struct run r = run(&v, -1, (char *[]){"version", NULL});
	cr_expect_eq(r.status, KEEL_OPT_RUN);
	r = run(&v, -1, (char *[]){"version", "foo", NULL});
	cr_expect_eq(r.status, 2);
	cr_expect_str_eq(r.err, "keel version: unexpected argument 'foo'\ntry 'keel version --help'\n");
	r = run(&v, -1, (char *[]){"version", "--json", NULL});
	cr_expect_eq(r.status, 2);
	cr_expect_str_eq(r.err, "keel version: unknown option '--json'\ntry 'keel version --help'\n");
}
