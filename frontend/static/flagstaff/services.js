/* Flagstaff services page: follows /ws/v1/services/ (discovery/live.py) and keeps the
 * table in step -- rows appear (up), change (changed), disappear (down); the
 * "last heartbeat" column follows the instances' lease renewals. */
(function () {
  "use strict";

  var table = document.getElementById("services");
  var status = document.getElementById("services-status");
  if (!table || !window.WebSocket) return;
  var body = table.tBodies[0];

  function when(seconds) {
    if (!seconds) return "";
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function cell(row, name, text) {
    var td = document.createElement("td");
    td.className = name;
    if (text !== undefined) td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function render(instance) {
    var key = "/services/" + instance.service + "/" + instance.instance_id;
    var row = document.createElement("tr");
    row.dataset.key = key;
    row.dataset.service = instance.service;
    row.dataset.instance = instance.instance_id;
    row.className = "health-" + instance.health;
    cell(row, "service", instance.service);
    cell(row, "instance", instance.instance_id);
    var address = cell(row, "address");
    var code = document.createElement("code");
    code.textContent = instance.address + ":" + instance.port;
    address.appendChild(code);
    var health = cell(row, "health", instance.health);
    health.title = instance.health_output || "";
    var tags = cell(row, "tags");
    (instance.tags || []).forEach(function (tag) {
      var span = document.createElement("span");
      span.className = "tag";
      span.textContent = tag;
      tags.appendChild(span);
      tags.appendChild(document.createTextNode(" "));
    });
    var metadata = cell(row, "metadata");
    Object.keys(instance.metadata || {}).sort().forEach(function (k) {
      var c = document.createElement("code");
      c.textContent = k + "=" + instance.metadata[k];
      metadata.appendChild(c);
      metadata.appendChild(document.createTextNode(" "));
    });
    cell(row, "registered", when(instance.registered_at));
    var old = body.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
    cell(row, "heartbeat", old ? old.querySelector(".heartbeat").textContent : "");
    return row;
  }

  function place(row) {
    var old = body.querySelector('tr[data-key="' + CSS.escape(row.dataset.key) + '"]');
    if (old) { body.replaceChild(row, old); return; }
    var rows = Array.prototype.slice.call(body.querySelectorAll("tr[data-key]"));
    var after = rows.find(function (r) { return r.dataset.key > row.dataset.key; });
    body.insertBefore(row, after || null);
    emptyRow();
  }

  function emptyRow() {
    var empty = body.querySelector("tr.empty");
    var any = body.querySelector("tr[data-key]");
    if (any && empty) empty.remove();
    if (!any && !empty) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(tr, "", "No instances registered.");
      td.colSpan = 8;
      body.appendChild(tr);
    }
  }

  function connect(delay) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/v1/services/");
    socket.onopen = function () { delay = 500; if (status) status.textContent = "live"; };
    socket.onclose = function () {
      if (status) status.textContent = "reconnecting…";
      setTimeout(function () { connect(Math.min(delay * 2, 10000)); }, delay);
    };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "snapshot") {
        body.querySelectorAll("tr[data-key]").forEach(function (r) { r.remove(); });
        message.instances.forEach(function (i) { place(render(i)); });
        emptyRow();
      } else if (message.type === "up" || message.type === "changed") {
        place(render(message.instance));
      } else if (message.type === "down") {
        var key = "/services/" + message.instance.service + "/" + message.instance.instance_id;
        var row = body.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
        if (row) row.remove();
        emptyRow();
      } else if (message.type === "heartbeats") {
        Object.keys(message.last).forEach(function (key) {
          var row = body.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
          if (row) row.querySelector(".heartbeat").textContent = when(message.last[key]);
        });
      }
      if (message.revision) table.dataset.revision = message.revision;
    };
  }

  connect(500);
})();
