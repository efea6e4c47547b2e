/*
 * The native one-shot API, POST /v1/run.
 */
#include "server/internal.h"
#include "base/banned.h"

void native_run(struct request *req)
{
	request_error(req, 501, "not_implemented", "POST /v1/run is coming");
}
