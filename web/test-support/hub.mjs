// Shared by the browser tests: a real hub process on a free loopback port with its own data
// dir, tokens minted with its secret, and a condition poller (no fixed sleeps).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../..");
export const BIN = process.env.TRACKHUB_BIN || join(repo, "target/debug/trackhub");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const DATA = process.env.SHARED_DATA || resolve(repo, "../shared/data");
export const AMAZON = join(DATA, "amazon_delivery_activity_labels/data_anon");
export const ORIGIN = "47.6062,-122.3321";

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A hub process: `start()`, `stop()` (SIGTERM, waits for exit), `token(role, sub)`. */
export class Hub {
  constructor(prefix, extraArgs = []) {
    this.dataDir = mkdtempSync(join(tmpdir(), prefix));
    this.extraArgs = extraArgs;
    this.proc = null;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    this.proc = spawn(
      BIN,
      ["serve", "--data-dir", this.dataDir, "--addr", `127.0.0.1:${this.port}`, "--map-tile-url", "", "--conn-rate-per-ip", "0", ...this.extraArgs],
      { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
    );
    await until("the hub's /readyz", 30_000, async () => (await fetch(`${this.base}/readyz`)).ok);
  }

  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((ok) => p.once("exit", ok));
    p.kill("SIGTERM");
    await exited;
  }

  remove() {
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  token(role, sub) {
    const minted = spawnSync(BIN, ["token", "--data-dir", this.dataDir, "--role", role, "--sub", sub], { encoding: "utf8" });
    if (minted.status !== 0) throw new Error(minted.stderr);
    return minted.stdout.trim().split("\n").pop();
  }

  /** `trackhub replay` of `files` into this hub; resolves to { code, out } when it ends. */
  replay(args, files) {
    const child = spawn(BIN, ["replay", "--hub", this.base, "--data-dir", this.dataDir, "--quiet", ...args, ...files], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    return new Promise((ok) => child.once("exit", (code) => ok({ code, out })));
  }
}
