// libpq, PostgreSQL's client library (libpq-dev; headers in
// /usr/include/postgresql). Imported only by RelayPostgres, which uses its
// asynchronous API alone (PQconnectStartParams/PQconnectPoll,
// PQsendQueryParams, PQconsumeInput/PQisBusy/PQgetResult).
#include <postgresql/libpq-fe.h>
