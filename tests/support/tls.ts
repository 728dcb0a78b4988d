// A self-signed certificate for a test server on 127.0.0.1 (and localhost):
// the server presents it, and clients trust it as their CA.
import selfsigned from 'selfsigned';

export interface Certificate {
  /** PEM; also what clients pass as their CA. */
  cert: string;
  /** PEM private key. */
  key: string;
}

export async function localCertificate(commonName = '127.0.0.1'): Promise<Certificate> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: commonName }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 7, ip: '127.0.0.1' },
          { type: 2, value: 'localhost' },
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}
