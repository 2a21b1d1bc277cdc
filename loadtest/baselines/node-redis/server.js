// The baseline: what a team would build for trackhub's job without trackhub, the way its seeds
// did: a Node.js WebSocket server (`ws`) in front of Redis (`ioredis`). Each fix from a driver
// is GEOADDed to the fleet's Redis geo set and PUBLISHed on the fleet's channel; the driver's
// frame is acked once Redis has taken every fix in it. Every node subscribes to the channel
// and sends each position to its watchers whose bbox holds it. No arrival detection, history,
// ETAs or durability beyond Redis's memory: only the live-position path, which is what the
// comparison measures.
//
// It speaks the subset of trackhub's JSON protocol the load generator uses (PROTOCOL.md):
//   driver  /v1/ws/driver?access_token=JWT  ← {"type":"ping",seq,ts,lat,lon,…} | {"type":"batch","pings":[…]}
//                                          → {"type":"ack","seq":N}
//   watcher /v1/ws/watch?access_token=JWT   ← {"type":"subscribe","bbox":[w,s,e,n]}
//                                          → {"type":"positions","positions":[{driver_id,lat,lon,ts}]}
// Tokens are HS256 JWTs with trackhub's claims (`sub`, `role`, `fleet`), checked with the
// secret in TRACKHUB_JWT_SECRET. Listens on PORT (default 8090); Redis at REDIS_URL.
import http from "node:http";
import Redis from "ioredis";
import jwt from "jsonwebtoken";
import { WebSocketServer } from "ws";

const PORT = Number(process.env.PORT || 8090);
const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const SECRET = process.env.TRACKHUB_JWT_SECRET;
if (!SECRET) {
  console.error("TRACKHUB_JWT_SECRET is required (the same secret the load generator mints with)");
  process.exit(2);
}

const redis = new Redis(REDIS_URL);
const subscriber = new Redis(REDIS_URL);
const watchers = new Map(); // fleet → Set of { ws, bbox }

subscriber.psubscribe("positions:*");
subscriber.on("pmessage", (_pattern, channel, message) => {
  const set = watchers.get(channel.slice("positions:".length));
  if (!set) return;
  const p = JSON.parse(message);
  let frame = null;
  for (const w of set) {
    const [west, south, east, north] = w.bbox ?? [];
    if (w.bbox && p.lon >= west && p.lon <= east && p.lat >= south && p.lat <= north) {
      frame ??= JSON.stringify({ type: "positions", positions: [p] });
      w.ws.send(frame);
    }
  }
});

function claims(req) {
  const token = new URL(req.url, "http://x").searchParams.get("access_token");
  try {
    return jwt.verify(token, SECRET, { algorithms: ["HS256"] });
  } catch {
    return null;
  }
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === "/readyz" ? 200 : 404).end();
});
const wss = new WebSocketServer({
  noServer: true,
  // Echo the client's first subprotocol (the load generator asks for trackhub's JSON one).
  handleProtocols: (protocols) => protocols.values().next().value ?? false,
});

server.on("upgrade", (req, socket, head) => {
  const who = claims(req);
  const path = new URL(req.url, "http://x").pathname;
  if (!who || (path !== "/v1/ws/driver" && path !== "/v1/ws/watch")) {
    socket.end("HTTP/1.1 401 Unauthorized\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => (path === "/v1/ws/driver" ? driver(ws, who) : watcher(ws, who)));
});

function driver(ws, who) {
  const key = `drivers:${who.fleet}`;
  const channel = `positions:${who.fleet}`;
  ws.on("message", async (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: "error", code: "invalid_message", message: "not JSON" }));
      return;
    }
    const pings = msg.type === "batch" ? msg.pings : [msg];
    try {
      await Promise.all(pings.map((p) => {
        const position = JSON.stringify({ driver_id: who.sub, lat: p.lat, lon: p.lon, ts: new Date(p.ts).toISOString() });
        return Promise.all([redis.geoadd(key, p.lon, p.lat, who.sub), redis.publish(channel, position)]);
      }));
      ws.send(JSON.stringify({ type: "ack", seq: Math.max(...pings.map((p) => p.seq)) }));
    } catch (e) {
      ws.send(JSON.stringify({ type: "error", code: "unavailable", message: String(e) }));
    }
  });
}

function watcher(ws, who) {
  const entry = { ws, bbox: null };
  if (!watchers.has(who.fleet)) watchers.set(who.fleet, new Set());
  watchers.get(who.fleet).add(entry);
  ws.on("message", (data) => {
    try {
      const msg = JSON.parse(data);
      if (msg.type === "subscribe" && Array.isArray(msg.bbox)) entry.bbox = msg.bbox;
    } catch {
      // Ignored: a watcher that cannot subscribe gets nothing.
    }
  });
  ws.on("close", () => watchers.get(who.fleet)?.delete(entry));
}

server.listen(PORT, "127.0.0.1", () => console.log(`baseline listening on 127.0.0.1:${PORT}`));
