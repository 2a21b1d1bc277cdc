// The driver app's outbox: every fix the phone takes is kept in IndexedDB (database
// `trackhub-driver`, store `outbox`, keyed by seq) until the hub acknowledges it, so fixes
// survive a reload, a crash and a dead zone. Acks are cumulative: `ack(seq)` drops every fix up
// to seq. The seq counter is kept in the same database and starts at the time of the first
// fix (unix ms): a reinstalled app then starts above its old numbers, never below.
"use strict";

const Outbox = (() => {
  let dbp = null;
  function open() {
    dbp ??= new Promise((ok, fail) => {
      const req = indexedDB.open("trackhub-driver", 1);
      req.onupgradeneeded = () => {
        req.result.createObjectStore("outbox", { keyPath: "seq" });
        req.result.createObjectStore("meta");
      };
      req.onsuccess = () => ok(req.result);
      req.onerror = () => fail(req.error);
    });
    return dbp;
  }

  function tx(stores, mode, work) {
    return open().then((db) => new Promise((ok, fail) => {
      const t = db.transaction(stores, mode);
      let result;
      t.oncomplete = () => ok(result);
      t.onerror = () => fail(t.error);
      t.onabort = () => fail(t.error);
      result = work(t);
    }));
  }

  return {
    /** Stores `fix` (without seq) under the next seq, in one transaction; resolves to it. */
    add(fix) {
      let stored;
      return tx(["outbox", "meta"], "readwrite", (t) => {
        const meta = t.objectStore("meta");
        const last = meta.get("seq");
        last.onsuccess = () => {
          const seq = last.result === undefined ? Date.now() : last.result + 1;
          stored = { ...fix, seq };
          meta.put(seq, "seq");
          t.objectStore("outbox").put(stored);
        };
      }).then(() => stored);
    },
    /** Up to `limit` waiting fixes with seq > `after`, oldest first. */
    after(after, limit) {
      return tx(["outbox"], "readonly", (t) => {
        const out = [];
        const range = after === null ? null : IDBKeyRange.lowerBound(after, true);
        const cursor = t.objectStore("outbox").openCursor(range);
        cursor.onsuccess = () => {
          const c = cursor.result;
          if (c && out.length < limit) {
            out.push(c.value);
            c.continue();
          }
        };
        return out;
      });
    },
    /** Drops every fix up to and including `seq` (the hub committed them). */
    ack(seq) {
      return tx(["outbox"], "readwrite", (t) => {
        t.objectStore("outbox").delete(IDBKeyRange.upperBound(seq));
      });
    },
    /** How many fixes wait. */
    count() {
      let n = 0;
      return tx(["outbox"], "readonly", (t) => {
        const req = t.objectStore("outbox").count();
        req.onsuccess = () => { n = req.result; };
      }).then(() => n);
    },
    /** Drops the waiting fixes (sign-out: they must not go out under another driver's token).
     * The seq counter stays, so numbers keep rising on this phone. */
    clear() {
      return tx(["outbox"], "readwrite", (t) => {
        t.objectStore("outbox").clear();
      });
    },
  };
})();
