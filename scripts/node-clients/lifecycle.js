// Google's Node.js client for Cloud Run (@google-cloud/run) against the local emulator, over gRPC (the
// client's default) on a plaintext channel, over REST (fallback: 'rest'), and, given the TLS gRPC port, over
// gRPC with TLS and no other change (grpc-js trusts the emulator's certificate through
// GRPC_DEFAULT_SSL_ROOTS_FILE_PATH): a job's whole lifecycle, each check printed.
//
//   npm install @google-cloud/run@3          (in this folder)
//   fanout emulator --port 8123 &           # gRPC on 8124, gRPC with TLS on 8125; prints the roots file
//   GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=<printed file> node lifecycle.js http://127.0.0.1:8123 127.0.0.1:8124 localhost:8125
//
// Exits 1 if any check fails. docs/emulator.md ("Clients tried") has what it covers.
'use strict';
const {JobsClient, ExecutionsClient, TasksClient} = require('@google-cloud/run').v2;
const grpc = require('@grpc/grpc-js');

const [restUrl, grpcTarget, tlsTarget] = process.argv.slice(2);
const parent = 'projects/local-project/locations/us-central1';
let failed = 0;
function check(what, ok) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failed += 1;
}

function options(transport) {
  // The emulator has no authentication; the clients still want an auth client (else they look for
  // Application Default Credentials and the metadata server). This one adds no header and fetches as
  // Node does, answering errors as responses (google-auth-library's clients throw on them, so the
  // REST transport never sees Google's error body).
  const authClient = {
    getRequestHeaders: async () => new Headers(),
    getProjectId: async () => 'local-project',
    getClient: async () => authClient,
    fetch: (url, init) => fetch(url, init),
  };
  if (transport === 'grpc' || transport === 'grpc-tls') {
    const target = transport === 'grpc' ? grpcTarget : tlsTarget;
    const colon = target.lastIndexOf(':');
    const [host, port] = [target.slice(0, colon), Number(target.slice(colon + 1))];
    if (transport === 'grpc-tls') return {apiEndpoint: host, port, authClient};
    return {apiEndpoint: host, port, sslCreds: grpc.credentials.createInsecure(), authClient};
  }
  const url = new URL(restUrl);
  return {apiEndpoint: url.hostname, port: Number(url.port), protocol: 'http', fallback: 'rest', authClient};
}

async function lifecycle(transport) {
  const opts = options(transport);
  const jobs = new JobsClient(opts);
  const executions = new ExecutionsClient(opts);
  const tasks = new TasksClient(opts);
  const jobId = `node-${transport}`;
  const name = `${parent}/jobs/${jobId}`;
  const container = {image: 'example.com/node:1', command: ['sh', '-c', 'echo task $CLOUD_RUN_TASK_INDEX; exit $EXIT'],
    env: [{name: 'EXIT', value: '0'}]};
  const job = {template: {taskCount: 2, template: {containers: [container], maxRetries: 0, timeout: {seconds: 30}}}};
  const [createOp] = await jobs.createJob({parent, jobId, job});
  const [created] = await createOp.promise();
  check(`${transport}: CreateJob operation resolves to the job`, created.name === name);
  const [got] = await jobs.getJob({name});
  check(`${transport}: GetJob etag matches`, got.etag === created.etag);
  const [listed] = await jobs.listJobs({parent});
  check(`${transport}: ListJobs lists it`, listed.some((j) => j.name === name));

  const [runOp] = await jobs.runJob({name, overrides: {taskCount: 3}});
  const [execution] = await runOp.promise();
  check(`${transport}: RunJob operation resolves to the finished execution`, execution.succeededCount === 3);
  const [again] = await executions.getExecution({name: execution.name});
  check(`${transport}: GetExecution has a completion time`, Boolean(again.completionTime));
  const [listedExecutions] = await executions.listExecutions({parent: name});
  check(`${transport}: ListExecutions lists it`, listedExecutions.length === 1);
  const [listedTasks] = await tasks.listTasks({parent: execution.name});
  check(`${transport}: ListTasks has 3 tasks by index`, listedTasks.map((t) => t.index).join() === '0,1,2');
  const [task] = await tasks.getTask({name: listedTasks[2].name});
  check(`${transport}: GetTask has its exit code`, (task.lastAttemptResult.exitCode || 0) === 0);
  const [across] = await tasks.listTasks({parent: `${parent}/jobs/-/executions/-`});
  check(`${transport}: ListTasks across jobs (wildcard)`, across.length >= 3);

  const failing = {overrides: {containerOverrides: [{env: [{name: 'EXIT', value: '3'}]}], taskCount: 1}};
  const [failOp] = await jobs.runJob({name, ...failing});
  let failure = null;
  try { await failOp.promise(); } catch (err) { failure = err; }
  check(`${transport}: a failed execution's operation rejects`, failure !== null && /failed/.test(String(failure.message)));

  let missing = null;
  try { await jobs.getJob({name: `${parent}/jobs/missing`}); } catch (err) { missing = err; }
  check(`${transport}: an unknown job is NOT_FOUND (5)`, missing !== null && missing.code === 5);
  let bad = null;
  try { await jobs.createJob({parent, jobId: 'Not_A_Name', job}); } catch (err) { bad = err; }
  check(`${transport}: a bad job id is INVALID_ARGUMENT (3)`, bad !== null && bad.code === 3);

  const [deleteOp] = await jobs.deleteJob({name});
  await deleteOp.promise();
  let gone = null;
  try { await jobs.getJob({name}); } catch (err) { gone = err; }
  check(`${transport}: DeleteJob removes it`, gone !== null && gone.code === 5);
  await Promise.all([jobs.close(), executions.close(), tasks.close()]);
}

(async () => {
  for (const transport of tlsTarget ? ['grpc', 'rest', 'grpc-tls'] : ['grpc', 'rest']) {
    try {
      await lifecycle(transport);
    } catch (err) {
      check(`${transport}: lifecycle ran without an unexpected error (${err})`, false);
    }
  }
  console.log(failed ? `${failed} checks failed` : 'all checks passed');
  process.exit(failed ? 1 : 0);
})();
