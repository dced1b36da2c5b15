// The sample page's script: joins the bus over the broker's WebSocket listener, shows what is
// published on web/#, and calls the Nest service demo.web. Plain JavaScript, run as the browser
// loads it; `busrt-nestjs/browser` is mapped to the bundle by the page's import map.
import { connectBrowser, RpcClient, packMsgpack, unpackMsgpack } from 'busrt-nestjs/browser';

const $ = (id) => document.getElementById(id);

/** Shows `text` in element `id`, and its state for whoever watches the page (the test). */
function show(id, text, state) {
  $(id).textContent = text;
  $(id).dataset.state = state;
}

async function main() {
  // The broker's address comes from the page's URL (the sample server prints it).
  const url = new URLSearchParams(location.search).get('bus') ?? `ws://${location.hostname}:7780`;
  // A name of its own for each page: two tabs are two clients.
  const name = `web.page-${crypto.randomUUID().slice(0, 8)}`;
  const client = await connectBrowser({ url, name, timeoutMs: 5000 });
  const rpc = new RpcClient(client, {
    handleFrame(frame) {
      const li = document.createElement('li');
      li.textContent = `${frame.topic} ${JSON.stringify(unpackMsgpack(frame.payload))}`;
      $('events').append(li);
    },
  });
  client.onDisconnect((err) => show('status', `disconnected${err ? `: ${err.message}` : ''}`, 'disconnected'));
  await client.subscribe('web/#');
  show('status', `joined as ${name}`, 'joined');

  const call = async () => {
    show('reply', 'calling…', 'waiting');
    try {
      const reply = await rpc.call('demo.web', 'greet', packMsgpack({ who: $('who').value }));
      show('reply', JSON.stringify(unpackMsgpack(reply)), 'done');
    } catch (e) {
      show('reply', `error ${e.code ?? ''}: ${e.message}`, 'failed');
    }
  };
  $('call').addEventListener('click', call);
  $('call').disabled = false;
  await call();
}

main().catch((e) => show('status', `failed: ${e.message}`, 'failed'));
