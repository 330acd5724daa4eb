// Runs the named scenarios of a client script and prints what the user saw, as JSON:
// {"scenario": {...what it saw...} or {"error": {...}}}. One scenario's failure never
// hides another's: tests/clients/*.py assert on each one.

export function serverFromEnv() {
  const baseURL = process.env.THREADLINE_BASE_URL;
  const apiKey = process.env.THREADLINE_API_KEY;
  if (!baseURL || !apiKey) throw new Error('THREADLINE_BASE_URL and THREADLINE_API_KEY must be set');
  return { baseURL, apiKey };
}

function describe(error) {
  return {
    type: error?.constructor?.name ?? typeof error,
    status: error?.status ?? error?.statusCode ?? null,
    code: error?.code ?? error?.error?.code ?? null,
    message: String(error?.message ?? error).slice(0, 2000),
    body: error?.responseBody ?? null,
  };
}

export async function runScenarios(scenarios) {
  const names = process.argv.slice(2);
  const unknown = names.filter((name) => !(name in scenarios));
  if (unknown.length) throw new Error(`unknown scenarios: ${unknown.join(', ')}`);
  const seen = {};
  for (const name of names) {
    try {
      seen[name] = await scenarios[name]();
    } catch (error) {
      seen[name] = { error: describe(error) };
    }
  }
  process.stdout.write(JSON.stringify(seen) + '\n');
}
