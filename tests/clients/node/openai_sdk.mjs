// The OpenAI SDK for Node (npm `openai`) against Threadline, as its README shows it.
import OpenAI from 'openai';
import { runScenarios, serverFromEnv } from './report.mjs';

const { baseURL, apiKey } = serverFromEnv();
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const HEADER = 'X-Hermes-Session-Id';

async function streamedChat(content, headers) {
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'echo', messages: [{ role: 'user', content }], stream: true }, { headers })
    .withResponse();
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  return { session: response.headers.get(HEADER), text };
}

async function streamedResponse(params, options) {
  const stream = await client.responses.create({ ...params, stream: true }, options);
  let deltas = '';
  let completed = null;
  for await (const event of stream) {
    if (event.type === 'response.output_text.delta') deltas += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  // A stream's final response has no `output_text` convenience: read its output items.
  const text = (completed?.output ?? [])
    .filter((item) => item.type === 'message')
    .flatMap((item) => item.content)
    .filter((part) => part.type === 'output_text')
    .map((part) => part.text)
    .join('');
  return { deltas, id: completed?.id, output_text: completed ? text : null };
}

await runScenarios({
  // Chat completions, streamed: the first turn gets its session id from the response
  // header; the next turns send only their new message with that header.
  async chat_stream() {
    const first = await streamedChat('hello');
    const second = await streamedChat('more', { [HEADER]: first.session });
    const third = await streamedChat('again', { [HEADER]: first.session });
    return { sessions: [first.session, second.session, third.session], replies: [first.text, second.text, third.text] };
  },

  // Responses chained with previous_response_id; the last one streamed.
  async responses_chain() {
    const first = await client.responses.create({ model: 'echo', input: 'one' });
    const second = await client.responses.create({ model: 'echo', input: 'two', previous_response_id: first.id });
    const third = await streamedResponse({ model: 'echo', input: 'three', previous_response_id: second.id });
    const fetched = await client.responses.retrieve(third.id);
    return {
      replies: [first.output_text, second.output_text, third.output_text],
      streamed_deltas: third.deltas,
      retrieved: fetched.output_text,
    };
  },

  async models_list() {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    return { ids };
  },

  // -- what needs the stateful surface (tests/clients/test_clients_stateful.py) --

  async models_retrieve() {
    const echo = await client.models.retrieve('echo');
    let missing = null;
    try {
      await client.models.retrieve('no-such-model');
    } catch (error) {
      missing = { type: error.constructor.name, status: error.status, code: error.code };
    }
    return { echo: { id: echo.id, object: echo.object }, missing };
  },

  // A conversation created through the Conversations API, continued on Responses and on
  // chat completions, its items read back.
  async conversations() {
    const conversation = await client.conversations.create({
      items: [{ type: 'message', role: 'user', content: 'My name is Ada.' }],
      metadata: { topic: 'clients' },
    });
    const first = await client.responses.create({ model: 'echo', input: 'hello', conversation: conversation.id });
    const second = await streamedResponse({ model: 'echo', input: 'again', conversation: conversation.id });
    const chat = await client.chat.completions.create(
      { model: 'echo', messages: [{ role: 'user', content: 'from chat' }] },
      { headers: { [HEADER]: conversation.id } },
    );
    const items = [];
    for await (const item of client.conversations.items.list(conversation.id, { order: 'asc' })) {
      items.push({ id: item.id, type: item.type, role: item.role ?? null });
    }
    const retrieved = await client.conversations.retrieve(conversation.id);
    return {
      id: conversation.id,
      object: conversation.object,
      metadata: retrieved.metadata,
      replies: [first.output_text, second.output_text, chat.choices[0].message.content],
      items,
    };
  },

  // Issue 13: a background response polled to its end, a stream dropped after a few
  // events and resumed with `retrieve(id, { stream: true, starting_after })`, and a
  // cancel of a response that has already ended.
  async background_and_resume() {
    const queued = await client.responses.create({ model: 'echo', input: 'in the background', background: true });
    let done = queued;
    for (let i = 0; i < 200 && ['queued', 'in_progress'].includes(done.status); i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      done = await client.responses.retrieve(queued.id);
    }
    const seen = [];
    const stream = await client.responses.create({ model: 'echo', input: 'one two three four five', stream: true });
    for await (const event of stream) {
      seen.push(event);
      if (seen.length === 4) break;
    }
    const rest = [];
    const resumed = await client.responses.retrieve(seen[0].response.id, {
      stream: true,
      starting_after: seen[seen.length - 1].sequence_number,
    });
    for await (const event of resumed) rest.push(event);
    const all = [...seen, ...rest];
    let cancelEnded = null;
    try {
      await client.responses.cancel(queued.id);
    } catch (error) {
      cancelEnded = { type: error.constructor.name, status: error.status };
    }
    return {
      queued: { status: queued.status, background: queued.background },
      done: { status: done.status, text: done.output_text },
      sequence: all.map((event) => event.sequence_number),
      last: all[all.length - 1].type,
      text: all.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join(''),
      cancelEnded,
    };
  },

  // A client that sets X-Hermes-Session-Id on every request: chat first, then Responses
  // on the same session.
  async responses_session_header() {
    const session = `node-${Date.now()}-${Math.random().toString(16).slice(2)}`;
    const sticky = new OpenAI({ baseURL, apiKey, maxRetries: 0, defaultHeaders: { [HEADER]: session } });
    const chat = await sticky.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'hi' }] });
    const { data: response, response: raw } = await sticky.responses
      .create({ model: 'echo', input: 'and now Responses' })
      .withResponse();
    let invalid = null;
    try {
      await client.responses.create({ model: 'echo', input: 'x' }, { headers: { [HEADER]: 'not a valid id!' } });
    } catch (error) {
      invalid = { status: error.status, code: error.code };
    }
    return {
      session,
      response_session: raw.headers.get(HEADER),
      replies: [chat.choices[0].message.content, response.output_text],
      invalid,
    };
  },
});
