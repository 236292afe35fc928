/* A shared object that is not a map-reduce job: it lacks the keel_mr_job
 * symbol, so loading it must fail with a message naming the symbol. */
int keel_mr_not_a_job(void);
int keel_mr_not_a_job(void)
{
	return 42;
}
