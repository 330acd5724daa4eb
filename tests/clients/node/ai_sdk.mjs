// The Vercel AI SDK (npm `ai` with `@ai-sdk/openai`) against Threadline, as its docs show it.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText } from 'ai';
import { runScenarios, serverFromEnv } from './report.mjs';

const { baseURL, apiKey } = serverFromEnv();
const HEADER = 'x-hermes-session-id';

// What the SDK sent to /responses, so a test can tell which input items a turn used.
const sent = [];
async function recordingFetch(url, init) {
  if (String(url).endsWith('/responses') && typeof init?.body === 'string') sent.push(JSON.parse(init.body));
  return fetch(url, init);
}
const openai = createOpenAI({ baseURL, apiKey, fetch: recordingFetch });

function inputTypes(body) {
  return (body.input ?? []).map((item) => item.type ?? `role:${item.role}`);
}

// The AI SDK's usual multi-turn loop: append the returned messages, then the next question.
async function conversationLoop(model, questions, { providerOptions, streamLast = false } = {}) {
  const messages = [];
  const replies = [];
  for (const [index, question] of questions.entries()) {
    messages.push({ role: 'user', content: question });
    const streamed = streamLast && index === questions.length - 1;
    const options = { model, messages, providerOptions, maxRetries: 0 };
    let text;
    let response;
    if (streamed) {
      const result = streamText({ ...options, onError: () => {} });
      text = '';
      for await (const delta of result.textStream) text += delta;
      response = await result.response;
    } else {
      const result = await generateText(options);
      text = result.text;
      response = result.response;
    }
    replies.push(text);
    messages.push(...response.messages);
  }
  return replies;
}

await runScenarios({
  // openai.chat(): the chat completions model. The loop sends the whole transcript each turn.
  async chat_generate() {
    return { replies: await conversationLoop(openai.chat('echo'), ['one', 'two', 'three'], { streamLast: true }) };
  },

  // openai.chat() with Threadline's session header: send only the new message.
  async chat_session_header() {
    const model = openai.chat('echo');
    const first = await generateText({ model, prompt: 'hello', maxRetries: 0 });
    const session = first.response.headers[HEADER];
    const second = await generateText({ model, prompt: 'more', headers: { [HEADER]: session }, maxRetries: 0 });
    const third = streamText({ model, prompt: 'again', headers: { [HEADER]: session }, maxRetries: 0, onError: () => {} });
    let streamed = '';
    for await (const delta of third.textStream) streamed += delta;
    const thirdSession = (await third.response).headers[HEADER];
    return {
      sessions: [session, second.response.headers[HEADER], thirdSession],
      replies: [first.text, second.text, streamed],
    };
  },

  // The default (Responses) model with store: false: the loop sends whole messages.
  async responses_store_false() {
    const replies = await conversationLoop(openai('echo'), ['one', 'two', 'three'], {
      providerOptions: { openai: { store: false } },
      streamLast: true,
    });
    return { replies, stores: sent.slice(-3).map((body) => body.store ?? null) };
  },

  // The default (Responses) model chained with previousResponseId: send only the new message.
  async responses_previous_id() {
    const model = openai('echo');
    const first = await generateText({ model, prompt: 'one', maxRetries: 0 });
    const second = await generateText({
      model,
      prompt: 'two',
      providerOptions: { openai: { previousResponseId: first.providerMetadata.openai.responseId } },
      maxRetries: 0,
    });
    const third = streamText({
      model,
      prompt: 'three',
      providerOptions: { openai: { previousResponseId: second.providerMetadata.openai.responseId } },
      maxRetries: 0,
      onError: () => {},
    });
    let streamed = '';
    for await (const delta of third.textStream) streamed += delta;
    return { replies: [first.text, second.text, streamed] };
  },

  // -- what needs the stateful surface (tests/clients/test_clients_stateful.py) --

  // The default model as the AI SDK's docs use it (store left on): generateText over three
  // turns appending the returned messages, then a streamed fourth turn. From the second
  // turn on the SDK refers to earlier answers by id (item_reference).
  async responses_default_store() {
    const before = sent.length;
    let replies = [];
    let error = null;
    try {
      replies = await conversationLoop(openai('echo'), ['one', 'two', 'three', 'four'], { streamLast: true });
    } catch (caught) {
      error = caught;
    }
    const inputs = sent.slice(before).map(inputTypes);
    if (error) {
      error.message = `${error.message} (input item types sent per turn: ${JSON.stringify(inputs)})`;
      throw error;
    }
    return { replies, inputs };
  },
});
