/* Flagstaff browser client (no build step, no dependencies): window.Flagstaff.
 *
 * Two ways in, one connection machinery (reconnect with jittered exponential
 * backoff, heartbeat timeout, status events):
 *
 * - Flagstaff.createClient({key, context, url}) -- for product pages, with a
 *   BROWSER key (fs_browser_...). Connects to /ws/v1/values/: the server
 *   evaluates every flag of the key's environment for the context and sends
 *   values only, never rules. client.variation(flag, default),
 *   client.variationDetail(flag, default), client.allFlags(),
 *   client.identify(context), client.on("ready" | "change" | "status" | "error", fn),
 *   client.waitUntilReady(ms) (a Promise), client.close().
 *
 * - new Flagstaff.LiveStream({subscriptions: [{project, environment, since_revision}]})
 *   -- for the platform's own UI (the session cookie): raw documents over
 *   /ws/v1/flags/ (docs/websocket-protocol.md), resuming from the last revision
 *   after a reconnect (no event missed, none delivered twice).
 *   stream.on("snapshot" | "event" | "subscribed" | "status" | "error", fn).
 *
 * Status values: "connecting", "ready", "stale" (disconnected; last values
 * still served; reconnecting), "error" (key refused), "closed".
 * docs/sdk.md documents both.
 */
(function (global) {
  "use strict";

  function Emitter() { this.handlers = {}; }
  Emitter.prototype.on = function (name, fn) {
    (this.handlers[name] = this.handlers[name] || []).push(fn);
    var list = this.handlers[name];
    return function () { var i = list.indexOf(fn); if (i >= 0) list.splice(i, 1); };
  };
  Emitter.prototype.emit = function (name) {
    var args = Array.prototype.slice.call(arguments, 1);
    (this.handlers[name] || []).slice().forEach(function (fn) {
      try { fn.apply(null, args); } catch (e) { if (global.console) console.error("flagstaff listener", e); }
    });
  };

  /* Jittered exponential backoff ("equal jitter"): attempt n waits between d/2 and d. */
  function Backoff(initial, maximum) {
    this.initial = initial || 200;
    this.maximum = maximum || 30000;
    this.attempt = 0;
  }
  Backoff.prototype.next = function () {
    var ceiling = Math.min(this.maximum, this.initial * Math.pow(2, Math.min(this.attempt, 30)));
    this.attempt += 1;
    return ceiling / 2 + Math.random() * ceiling / 2;
  };
  Backoff.prototype.reset = function () { this.attempt = 0; };

  function socketUrl(base, path, query) {
    var origin = base || (global.location.protocol + "//" + global.location.host);
    var url = origin.replace(/^http(s?):/, "ws$1:").replace(/\/+$/, "") + path;
    return query ? url + "?" + query : url;
  }

  /* One websocket, reopened after every failure. `owner` provides hello(send),
   * handle(msg) and a status setter; messages are JSON objects. */
  function Connection(owner, url, options) {
    this.owner = owner;
    this.url = url;
    this.heartbeatTimeout = options.heartbeatTimeout || 15000;
    this.backoff = new Backoff(options.reconnectInitial, options.reconnectMax);
    this.socket = null;
    this.closed = false;
    this.timer = null;
    this.retry = null;
    this.sessions = 0;
  }
  Connection.prototype.open = function () {
    var self = this;
    if (self.closed) return;
    self.sessions += 1;
    var socket;
    try { socket = new global.WebSocket(self.url); } catch (e) { self.lost("cannot connect: " + e); return; }
    self.socket = socket;
    socket.onopen = function () { self.arm(); self.owner.hello(function (msg) { socket.send(JSON.stringify(msg)); }); };
    socket.onmessage = function (message) {
      if (socket !== self.socket) return;
      self.arm();
      var msg;
      try { msg = JSON.parse(message.data); } catch (e) { msg = null; }
      if (!msg || typeof msg !== "object" || typeof msg.type !== "string") {
        if (global.console) console.warn("flagstaff: ignored a malformed message", message.data);
        return;
      }
      try { self.owner.handle(msg); } catch (e) { if (global.console) console.warn("flagstaff: ignored a message", e); }
    };
    socket.onclose = function (event) {
      if (socket !== self.socket) return;
      var refused = event.code === 4401 || event.code === 4403;
      self.lost("connection closed (code " + event.code + ")", refused);
    };
  };
  /* (Re)start the heartbeat timer: silence longer than heartbeatTimeout means a dead connection. */
  Connection.prototype.arm = function () {
    var self = this;
    if (self.timer) clearTimeout(self.timer);
    self.timer = setTimeout(function () {
      self.lost("no message for " + self.heartbeatTimeout + " ms (heartbeat timeout)");
    }, self.heartbeatTimeout);
  };
  Connection.prototype.lost = function (reason, refused) {
    var self = this;
    if (self.timer) { clearTimeout(self.timer); self.timer = null; }
    var socket = self.socket;
    self.socket = null;
    if (socket) { socket.onclose = null; try { socket.close(); } catch (e) { /* already closed */ } }
    if (self.closed) return;
    self.owner.lost(reason, !!refused);
    if (self.retry) clearTimeout(self.retry);
    self.retry = setTimeout(function () { self.retry = null; self.open(); }, self.backoff.next());
  };
  Connection.prototype.close = function () {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.retry) clearTimeout(this.retry);
    if (this.socket) { this.socket.onclose = null; this.socket.close(); this.socket = null; }
  };

  function setStatus(target, state, message) {
    if (target.status === state && target.statusMessage === message) return;
    var changed = target.status !== state;
    target.status = state;
    target.statusMessage = message;
    if (changed) target.emit("status", state, message);
  }

  /* ---------------------------------------------------------------- LiveStream */

  function LiveStream(options) {
    Emitter.call(this);
    options = options || {};
    this.status = "connecting";
    this.statusMessage = "connecting";
    this.subscriptions = (options.subscriptions || []).map(function (s) {
      return { project: s.project, environment: s.environment,
               revision: typeof s.since_revision === "number" ? s.since_revision : null };
    });
    this.connection = new Connection(this, socketUrl(options.url, options.path || "/ws/v1/flags/"), options);
    if (options.autoStart !== false) this.connection.open();
  }
  LiveStream.prototype = Object.create(Emitter.prototype);
  LiveStream.prototype.find = function (msg) {
    for (var i = 0; i < this.subscriptions.length; i++) {
      var s = this.subscriptions[i];
      if (s.project === msg.project && s.environment === msg.environment) return s;
    }
    return null;
  };
  LiveStream.prototype.hello = function (send) {
    this.subscriptions.forEach(function (s) {
      send({ type: "subscribe", project: s.project, environment: s.environment, since_revision: s.revision });
    });
  };
  LiveStream.prototype.handle = function (msg) {
    if (msg.type === "error") { this.emit("error", msg); return; }
    var sub = this.find(msg);
    if (!sub || typeof msg.revision !== "number") return;
    if (msg.type === "snapshot") {
      sub.revision = msg.revision;
      this.emit("snapshot", msg);
    } else if (msg.type === "event") {
      if (sub.revision !== null && msg.revision <= sub.revision) return;  /* never twice */
      sub.revision = msg.revision;
      this.emit("event", msg);
    } else if (msg.type === "subscribed") {
      if (sub.revision === null || msg.revision > sub.revision) sub.revision = msg.revision;
      this.connection.backoff.reset();
      setStatus(this, "ready", "streaming");
      this.emit("subscribed", msg);
    } else if (msg.type === "heartbeat") {
      if (sub.revision === null || msg.revision > sub.revision) sub.revision = msg.revision;
    }
  };
  LiveStream.prototype.lost = function (reason, refused) {
    setStatus(this, refused ? "error" : "stale", reason);
  };
  LiveStream.prototype.close = function () {
    this.connection.close();
    setStatus(this, "closed", "closed");
  };

  /* ------------------------------------------------------------- ValuesClient */

  function ValuesClient(options) {
    Emitter.call(this);
    options = options || {};
    if (!options.key) throw new Error("Flagstaff.createClient: a browser key is required");
    this.context = options.context || null;
    this.values = null;
    this.revision = null;
    this.status = "connecting";
    this.statusMessage = "connecting";
    this.connection = new Connection(this, socketUrl(options.url, "/ws/v1/values/",
                                                     "key=" + encodeURIComponent(options.key)), options);
    if (this.context) this.connection.open();
  }
  ValuesClient.prototype = Object.create(Emitter.prototype);
  ValuesClient.prototype.hello = function (send) {
    this.send = send;
    if (this.context) send({ type: "identify", context: this.context });
  };
  ValuesClient.prototype.identify = function (context) {
    this.context = context;
    if (this.connection.socket && this.send && this.connection.socket.readyState === 1) {
      this.send({ type: "identify", context: context });
    } else if (!this.connection.socket && !this.connection.retry) {
      this.connection.open();
    }
  };
  ValuesClient.prototype.handle = function (msg) {
    var self = this;
    if (msg.type === "error") { self.emit("error", msg); return; }
    if (typeof msg.revision !== "number") return;
    if (msg.type === "values" && msg.values && typeof msg.values === "object") {
      var before = self.values;
      self.values = msg.values;
      self.revision = msg.revision;
      self.connection.backoff.reset();
      var first = self.status !== "ready";
      setStatus(self, "ready", "streaming");
      if (before) {
        var names = {};
        Object.keys(before).concat(Object.keys(msg.values)).forEach(function (n) { names[n] = true; });
        Object.keys(names).sort().forEach(function (name) {
          if (JSON.stringify(before[name]) !== JSON.stringify(msg.values[name])) {
            self.emit("change", name, msg.values[name] ? msg.values[name].value : undefined, msg.revision);
          }
        });
      }
      if (first) self.emit("ready");
    } else if (msg.type === "changed" && self.values) {
      if (msg.revision <= self.revision) return;
      self.revision = msg.revision;
      var changed = msg.values || {};
      Object.keys(changed).sort().forEach(function (name) {
        self.values[name] = changed[name];
        self.emit("change", name, changed[name].value, msg.revision);
      });
      (msg.removed || []).forEach(function (name) {
        delete self.values[name];
        self.emit("change", name, undefined, msg.revision);
      });
    } else if (msg.type === "heartbeat" && self.revision !== null && msg.revision > self.revision) {
      self.revision = msg.revision;
    }
  };
  ValuesClient.prototype.lost = function (reason, refused) {
    setStatus(this, refused ? "error" : (this.values ? "stale" : "connecting"), reason);
  };
  /* The flag's value for the identified context; `fallback` when unknown or in error. */
  ValuesClient.prototype.variation = function (flag, fallback) {
    return this.variationDetail(flag, fallback).value;
  };
  ValuesClient.prototype.variationDetail = function (flag, fallback) {
    var v = this.values && this.values[flag];
    if (!v) {
      return { value: fallback, variation: null, stale: this.status !== "ready",
               reason: { kind: "ERROR", error_kind: this.values ? "FLAG_NOT_FOUND" : "CLIENT_NOT_READY" } };
    }
    var value = v.reason && v.reason.kind === "ERROR" ? fallback : v.value;
    return { value: value === null && v.variation === null ? fallback : value, variation: v.variation,
             reason: v.reason, stale: this.status !== "ready" };
  };
  ValuesClient.prototype.allFlags = function () {
    var out = {};
    var values = this.values || {};
    Object.keys(values).forEach(function (name) {
      if (!(values[name].reason && values[name].reason.kind === "ERROR")) out[name] = values[name].value;
    });
    return out;
  };
  ValuesClient.prototype.waitUntilReady = function (ms) {
    var self = this;
    return new Promise(function (resolve) {
      if (self.status === "ready") { resolve(true); return; }
      var timer = ms ? setTimeout(function () { off(); resolve(false); }, ms) : null;
      var off = self.on("ready", function () { if (timer) clearTimeout(timer); off(); resolve(true); });
    });
  };
  ValuesClient.prototype.close = function () {
    this.connection.close();
    setStatus(this, "closed", "closed");
  };

  var Flagstaff = global.Flagstaff = global.Flagstaff || {};
  Flagstaff.LiveStream = LiveStream;
  Flagstaff.ValuesClient = ValuesClient;
  Flagstaff.Backoff = Backoff;
  Flagstaff.createClient = function (options) { return new ValuesClient(options); };
})(window);
