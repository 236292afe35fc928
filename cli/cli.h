/* The keel command: one file per subcommand (cmd_<name>.c), one line per
 * subcommand in the table in main.c. A subcommand gets argv with argv[0]
 * set to its own name and returns the process exit status. */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

int keel_cmd_version(int argc, char **argv);
int keel_cmd_topo(int argc, char **argv);
int keel_cmd_shards(int argc, char **argv);
int keel_cmd_mr(int argc, char **argv);
int keel_cmd_node(int argc, char **argv);
int keel_cmd_send(int argc, char **argv);
int keel_cmd_raft(int argc, char **argv);

/* Strict unsigned option value: digits only, min..max; prints the error
 * (cmd_topo.c). */
int keel_cli_parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out);

#endif
