/** Settings shared by every member's MQTT connection. */
export interface MqttAuth {
  username?: string;
  password?: string;
  /** CA certificate(s) for `mqtts://`. */
  ca?: Buffer;
  /** MQTT protocol level: 4 (3.1.1) or 5. */
  protocolVersion?: 4 | 5;
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
