// Azure ML workspace and its dependent resources, the Bicep way (the Terraform twin is in ../terraform).
// Deployed at resource-group scope by iac-create-environment-pipeline-bicep.yml, which creates the group.

@description('Short prefix of every resource name: 3 to 10 lower-case letters or digits (BASE_NAME).')
@minLength(3)
@maxLength(10)
param baseName string

@description('Azure region (LOCATION); defaults to the resource group\'s.')
param location string = resourceGroup().location

@description('Name of the Azure ML workspace (WORKSPACE_NAME).')
param workspaceName string

@description('Days the Log Analytics workspace behind Application Insights keeps data.')
param logRetentionDays int = 90

@description('Name of the Azure ML compute cluster the training jobs run on (AML_COMPUTE_CLUSTER_NAME).')
param computeClusterName string = 'cpu-cluster'

@description('VM size of the cluster\'s nodes.')
param computeVmSize string = 'Standard_DS3_v2'

@description('Most nodes the cluster scales to; at least the parallel step\'s instance_count (ff/pipeline_config.json).')
@minValue(1)
param computeMaxNodes int = 4

@description('Low-priority (preemptible, cheaper) nodes instead of dedicated ones.')
param computeLowPriority bool = false

@description('\'recover\' when a soft-deleted Key Vault of this name exists (the pipeline checks): a vault with purge protection stays soft-deleted for 90 days after its resource group is deleted, and creating it again fails.')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('Tags put on every resource.')
param tags object = {
  project: 'mlops-template'
}

// Storage accounts, vaults and registries need globally unique names of letters and digits.
var compactName = toLower(replace(baseName, '-', ''))
var suffix = substring(uniqueString(subscription().subscriptionId, resourceGroup().id), 0, 6)

// Log Analytics workspace: where Application Insights keeps its data.
resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${baseName}-log'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

// Application Insights (workspace-based): telemetry of the scoring service and the online endpoints.
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${baseName}-appi'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
  }
}

// Key Vault of the workspace.
resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Public endpoint on purpose: Microsoft-hosted agents and Azure ML compute reach the vault without a VNet; access is by Azure RBAC only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: no private network in this template.
  name: '${compactName}kv${suffix}'
  location: location
  tags: tags
  properties: {
    createMode: keyVaultCreateMode
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Storage account of the workspace: default datastores, run outputs, models.
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: Public endpoint on purpose: Microsoft-hosted agents and Azure ML serverless compute use it without a VNet; anonymous blob access is off.
  // checkov:skip=CKV_AZURE_35: Default network action Allow: needed while the account has no private endpoint (see CKV_AZURE_59).
  // checkov:skip=CKV_AZURE_206: Locally redundant storage is enough for data and models the pipelines can rebuild; use GRS/ZRS for production data.
  // checkov:skip=CKV_AZURE_43: The name is computed, which the check cannot read: lower-cased baseName (at most 10) + 'st' + 6 characters of uniqueString, so 3 to 24 lower-case letters and digits.
  name: '${compactName}st${suffix}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // The workspace's default datastores authenticate with the account key.
    allowSharedKeyAccess: true
    isLocalUserEnabled: false
    // Azure ML needs a flat namespace for its default storage account.
    isHnsEnabled: false
    sasPolicy: {
      sasExpirationPeriod: '01.00:00:00'
      expirationAction: 'Log'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 14
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 14
    }
  }
}

// Container registry of the workspace: Azure ML environments and the scoring service image.
resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139: Public endpoint on purpose: hosted agents push, ACI / App Service / Kubernetes pull without a VNet; access needs Entra ID (admin user off).
  // checkov:skip=CKV_AZURE_166: Image quarantine needs Premium and a scanner that releases images.
  // checkov:skip=CKV_AZURE_233: Zone redundancy needs Premium; one zone is enough for this template.
  name: '${compactName}cr${suffix}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    adminUserEnabled: false
  }
}

// Identity that Azure Container Instances pull the scoring image with (the registry's admin user is off):
// `python -m ml_service.scoring.deploy.aci --pull-identity <aciPullIdentityId>` (ACI_PULL_IDENTITY_ID).
resource aciPullIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}-aci-pull'
  location: location
  tags: tags
}

// Built-in role AcrPull, granted to that identity on the registry only.
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource aciPullRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, aciPullIdentity.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: aciPullIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The Azure ML workspace itself.
resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = {
  // checkov:skip=CKV_AZURE_243: No private endpoint: the template has no virtual network, so hosted agents submit jobs and register models over the public endpoint; access needs Entra ID.
  name: workspaceName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: workspaceName
    applicationInsights: appInsights.id
    keyVault: keyVault.id
    storageAccount: storage.id
    containerRegistry: registry.id
    publicNetworkAccess: 'Enabled'
  }
}

// The compute cluster every training job runs on: no node (and no cost) while idle, scaled up per job.
resource computeCluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = {
  parent: workspace
  name: computeClusterName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    // Entra ID only: no SSH user or keys on the nodes.
    disableLocalAuth: true
    properties: {
      vmSize: computeVmSize
      vmPriority: computeLowPriority ? 'LowPriority' : 'Dedicated'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT120S'
      }
      remoteLoginPortPublicAccess: 'Disabled'
    }
  }
}

output workspaceName string = workspace.name
output computeClusterName string = computeCluster.name
output workspaceId string = workspace.id
output containerRegistryLoginServer string = registry.properties.loginServer
output storageAccountName string = storage.name
output keyVaultName string = keyVault.name
@description('Put it in the variable group as ACI_PULL_IDENTITY_ID (ACI pulls the scoring image with it).')
output aciPullIdentityId string = aciPullIdentity.id
