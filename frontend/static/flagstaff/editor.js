/* Flagstaff editor: small progressive enhancements (the pages work without JavaScript).
 *
 * - the rollout slider and the exact number field follow each other;
 * - the kill switch asks for confirmation;
 * - live updates (`Flagstaff.live`): toggles follow changes made elsewhere, and
 *   the flag page says when its flag was changed by someone else.
 */
(function () {
  "use strict";

  function syncRollout() {
    document.querySelectorAll("form.rollout").forEach(function (form) {
      var slider = form.querySelector("input[type=range]");
      var number = form.querySelector("input[type=number]");
      if (!slider || !number) return;
      slider.addEventListener("input", function () { number.value = slider.value; });
      number.addEventListener("input", function () {
        if (number.value !== "" && !isNaN(Number(number.value))) slider.value = number.value;
      });
    });
  }

  function confirmKillSwitch() {
    document.querySelectorAll("form.kill-switch").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm || "Turn this flag off everywhere?")) {
          event.preventDefault();
        }
      });
    });
  }

  /* Live updates over /ws/v1/flags/ (docs/websocket-protocol.md). The flag list
   * follows every environment it shows and flips its toggles as changes arrive;
   * the flag page follows its flag's environments from the revisions it loaded
   * and, when someone else changes the flag, flips that toggle and says so (its
   * forms keep the loaded revision: a save after a remote change comes back as
   * a conflict, never an overwrite). */
  var live = {
    socket: null,
    url: "/ws/v1/flags/",
    setSwitch: function (scope, on) {
      var button = scope.querySelector("button.switch");
      var input = scope.querySelector('input[name="on"]');
      if (!button || !input) return;
      button.classList.toggle("on", on);
      button.classList.toggle("off", !on);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.textContent = on ? "On" : "Off";
      input.value = on ? "false" : "true";
    },
    notify: function (text) {
      var notice = document.getElementById("live-notice");
      if (!notice) return;
      notice.textContent = text;
      notice.hidden = false;
    },
    subscriptions: function () {
      var hook = document.getElementById("live-hook");
      var subs = [];
      if (hook) {
        document.querySelectorAll("table.envs tr[data-environment]").forEach(function (row) {
          subs.push({ project: hook.dataset.project, environment: row.dataset.environment,
                      since_revision: Number(row.dataset.revision) || null });
        });
        return { flag: hook.dataset.flag, selected: hook.dataset.environment, subs: subs };
      }
      var table = document.querySelector("table[data-live-project]");
      if (!table) return null;
      var seen = {};
      table.querySelectorAll("td[data-environment]").forEach(function (cell) {
        var env = cell.dataset.environment;
        if (!seen[env]) {
          seen[env] = true;
          subs.push({ project: table.dataset.liveProject, environment: env, since_revision: null });
        }
      });
      return { flag: null, selected: null, subs: subs };
    },
    apply: function (page, msg) {
      (msg.changes || []).forEach(function (change) {
        if (change.kind !== "flag") return;
        if (page.flag && change.flag !== page.flag) return;
        var on = !!(change.doc && change.doc.on === true);
        if (page.flag) {
          var row = document.querySelector('table.envs tr[data-environment="' + msg.environment + '"]');
          if (row) {
            live.setSwitch(row, on);
            row.dataset.revision = String(msg.revision);
            var rev = row.querySelector(".revision");
            if (rev) rev.textContent = "r" + msg.revision + " (changed)";
          }
          if (msg.environment === page.selected) {
            var who = msg.actor ? " by " + msg.actor : " by someone else";
            live.notify("This flag was changed in " + msg.environment + who + " (revision r" +
                        msg.revision + "). Reload to see the change; saving now shows a conflict.");
            document.body.dataset.liveRevision = String(msg.revision);
          }
        } else {
          var cell = document.querySelector('tr[data-flag="' + change.flag + '"] td[data-environment="' +
                                            msg.environment + '"]');
          if (cell) live.setSwitch(cell, on);
        }
      });
    },
    connect: function () {
      var page = live.subscriptions();
      if (!page || !page.subs.length || !window.WebSocket) return null;
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + window.location.host + live.url);
      socket.addEventListener("open", function () {
        page.subs.forEach(function (sub) {
          socket.send(JSON.stringify({ type: "subscribe", project: sub.project,
                                       environment: sub.environment, since_revision: sub.since_revision }));
        });
      });
      socket.addEventListener("message", function (message) {
        var msg;
        try { msg = JSON.parse(message.data); } catch (e) { return; }
        if (msg && msg.type === "event") live.apply(page, msg);
        if (msg && msg.type === "subscribed") document.body.dataset.live = "subscribed";
      });
      socket.addEventListener("close", function () {
        /* Reconnect later from the page's revisions (a reload is always correct). */
        document.body.dataset.live = "closed";
        live.socket = null;
      });
      live.socket = socket;
      return socket;
    }
  };
  window.Flagstaff = window.Flagstaff || {};
  window.Flagstaff.live = live;

  function start() { syncRollout(); confirmKillSwitch(); live.connect(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
