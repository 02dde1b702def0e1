// MQTT.js (the npm package `mqtt`, the MQTT client most web pages use)
// against our broker over MQTT over WebSocket: run by tests/mqtt_websocket.rs.
//
// node exchange.js URL VERSION
//
// One MQTT.js client subscribes to mqttjs/# at QoS 1 and prints
// `subscribed [QOS]`; a second MQTT.js client then publishes at QoS 1 and 2.
// The test publishes a third message from mqtt_publisher over TCP. Each
// message received is printed as `TOPIC PAYLOAD`; after three, the script
// disconnects and exits 0. Any error, or 10 s without all three: exit 1.
'use strict';
const mqtt = require('mqtt');

const [url, version] = process.argv.slice(2);
const options = {
  protocolVersion: Number(version),
  clientId: `mqttjs-${version}`,
  connectTimeout: 5000,
  reconnectPeriod: 0,
};
const fail = (why) => {
  console.error(`error: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timed out'), 10000);

const subscriber = mqtt.connect(url, options);
subscriber.on('error', (error) => fail(error.message));
subscriber.on('connect', () => {
  subscriber.subscribe('mqttjs/#', { qos: 1 }, (error, granted) => {
    if (error) fail(error.message);
    console.log(`subscribed ${JSON.stringify(granted.map((g) => g.qos))}`);
    const publisher = mqtt.connect(url, { ...options, clientId: `${options.clientId}-pub` });
    publisher.on('error', (error) => fail(error.message));
    publisher.on('connect', () => {
      publisher.publish('mqttjs/qos1', 'one', { qos: 1 }, (error) => {
        if (error) fail(error.message);
        publisher.publish('mqttjs/qos2', 'two', { qos: 2 }, (error) => {
          if (error) fail(error.message);
          publisher.end();
        });
      });
    });
  });
});
let received = 0;
subscriber.on('message', (topic, payload) => {
  console.log(`${topic} ${payload.toString()}`);
  received += 1;
  if (received === 3) {
    subscriber.end(() => process.exit(0));
  }
});
